/**
 * Client strings that become file paths. The original joined them unchecked, so an index
 * id like "../../etc" wrote anywhere. Here an index id may be any printable string (the
 * original's "idx:1" included), and its folder name is an encoding of it that can neither
 * leave the storage root nor collide with another id's (docs/storage.md, "Folder names").
 */
import { isAbsolute, join, relative, resolve } from 'node:path';
import { ValidationError } from '../errors.js';

/** Longest index id, in characters. */
export const MAX_INDEX_ID_CHARS = 128;
/** Longest folder name (NAME_MAX on Linux and macOS, in bytes). */
const MAX_FOLDER_NAME = 255;
/** Control characters (C0, DEL, C1): not printable, and terminals and logs mangle them. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** Half a UTF-16 pair: it has no UTF-8 form, so no folder name. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** Characters that stand for themselves in folder names; everything else is %XX per UTF-8 byte. */
const SAFE = /[A-Za-z0-9._-]/;

const ID_RULE =
  `1-${MAX_INDEX_ID_CHARS} printable characters (no control characters), whose folder name is at most ${MAX_FOLDER_NAME} bytes ` +
  '(letters, digits, ".", "_" and "-" take one byte, any other character 3 bytes per UTF-8 byte)';

export function checkIndexId(indexId: unknown, field = 'indexId'): string {
  if (typeof indexId !== 'string' || indexId.length === 0 || indexId.length > MAX_INDEX_ID_CHARS || CONTROL.test(indexId) || LONE_SURROGATE.test(indexId)) {
    throw new ValidationError(field, ID_RULE, indexId);
  }
  if (indexFolderName(indexId).length > MAX_FOLDER_NAME) throw new ValidationError(field, ID_RULE, indexId);
  return indexId;
}

/**
 * The folder name of an index id: every character outside [A-Za-z0-9._-] (and "%" itself)
 * becomes %XX per UTF-8 byte, and so does a leading ".", so "." and ".." (and hidden names)
 * cannot occur. Ids that were valid before this encoding (letters, digits, "_", "-", ".",
 * not starting with "." or "-") map to themselves: existing folders keep loading.
 */
export function indexFolderName(indexId: string): string {
  let out = '';
  for (const ch of indexId) {
    if (SAFE.test(ch) && !(out === '' && ch === '.')) out += ch;
    else for (const byte of Buffer.from(ch, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The index id a folder name encodes, or null when it is not the canonical encoding of one. */
export function indexIdOfFolder(name: string): string | null {
  let id: string;
  try {
    id = decodeURIComponent(name);
  } catch {
    return null;
  }
  try {
    checkIndexId(id);
  } catch {
    return null;
  }
  return indexFolderName(id) === name ? id : null;
}

/** Resolves a configured storage folder inside `root`; relative paths are relative to root. */
export function resolveInside(root: string, dir: string, field = 'indexStorageDir'): string {
  if (dir.includes('\0')) throw new ValidationError(field, 'a path without NUL bytes', dir);
  const abs = resolve(root, dir);
  const rel = relative(resolve(root), abs);
  if (rel.startsWith('..') || isAbsolute(rel)) {
    throw new ValidationError(field, `a folder inside the server's storage root ${resolve(root)} (relative paths are taken from there)`, dir);
  }
  return abs;
}

/** {root}/{indexId}/{rank}: one folder per shard, as in the original. */
export function shardDir(storageRoot: string, indexStorageDir: string | null, indexId: string, rank: number): string {
  const base = indexStorageDir ? resolveInside(storageRoot, indexStorageDir) : resolve(storageRoot);
  return join(base, indexFolderName(checkIndexId(indexId)), String(rank));
}
