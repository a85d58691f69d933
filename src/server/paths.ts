/**
 * Client strings that become file paths. The original joined them unchecked, so an index
 * id like "../../etc" wrote anywhere. Here index ids are plain names and every storage
 * folder must resolve inside the server's storage root.
 */
import { isAbsolute, join, relative, resolve } from 'node:path';
import { ValidationError } from '../errors.js';

const INDEX_ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export function checkIndexId(indexId: unknown, field = 'indexId'): string {
  if (typeof indexId !== 'string' || !INDEX_ID.test(indexId) || indexId.includes('..')) {
    throw new ValidationError(field, '1-128 characters of letters, digits, "_", "-" or "." (no "..", no path separators), not starting with "." or "-"', indexId);
  }
  return indexId;
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
  return join(base, checkIndexId(indexId), String(rank));
}
