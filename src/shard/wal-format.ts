/**
 * The WAL's on-disk format (docs/storage.md): segment headers, records (header with
 * checksum, then vectors, offsets, metadata blob, key, moved-from pairs, and for records
 * with ids an ids section first), and their decoding. Pure: no files here.
 */
import { Packr, Unpackr } from 'msgpackr';
import { crc32Update } from './crc.js';
import type { RecordId } from './records.js';

const idPackr = new Packr({ useRecords: false });
const idUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export const SEGMENT_MAGIC = 0x53574644; // "DFWS"
export const RECORD_MAGIC = 0x4c574644; // "DFWL"
/** 2 added revoke records, 3 moved-from keys, delivered records and float16 adds, 4 records with ids and deletes; older segments are still read. */
export const WAL_FORMAT_VERSION = 4;
export const SEGMENT_HEADER = 16;
export const RECORD_HEADER = 48;
export const TYPE_ADD = 1;
/** Training started on the first `n` buffered rows (so a restart re-trains on the same rows). */
export const TYPE_TRAIN = 2;
/** A batch key was revoked by its client: the ids it got (if any) are tombstoned, a later add with it is refused. */
export const TYPE_REVOKE = 3;
/** Revocations this shard held for batches moved here (see WalBatch.movedFrom) were delivered to their servers. */
export const TYPE_DELIVERED = 4;
/** An add batch whose vectors arrived as float16 and are logged as they arrived (half the bytes). */
export const TYPE_ADD_F16 = 5;
/** TYPE_ADD / TYPE_ADD_F16 whose vectors carry record ids (an upsert: older versions of those ids are replaced). */
export const TYPE_ADD_IDS = 6;
export const TYPE_ADD_F16_IDS = 7;
/** Records deleted by id (the ids, msgpack, in the blob). */
export const TYPE_DELETE = 8;
/** Replay refuses records claiming more than this (a corrupt length must not allocate GBs). */
export const MAX_RECORD_BYTES = 2 ** 31;

export interface WalBatch {
  /** float32, or float16 (as Uint16Array) logged as it arrived. */
  vectors: Float32Array | Uint16Array;
  dim: number;
  blob: Uint8Array;
  offsets: Uint32Array;
  /** Idempotency key of the batch ('' when none). */
  key: string;
  /**
   * add records: [rank, key] of the attempts of this batch on servers that failed while
   * holding it (the client moved it here); each must be revoked there. delivered records:
   * the pairs whose revocation was confirmed.
   */
  movedFrom?: Array<[number, string]>;
  /** add records: one record id per vector (records with ids); delete records: the ids deleted. */
  ids?: RecordId[];
}

export interface WalRecord extends WalBatch {
  seq: number;
  type: 'add' | 'train' | 'revoke' | 'delivered' | 'delete';
  /** train records: rows the training used; add records: vectors in the batch; revoke records: ids tombstoned. */
  rows: number;
  /** revoke records: first tombstoned id, -1 when the key had not arrived (it is refused from then on). */
  firstId?: number;
}

/** A segment file's header: magic, format version, first sequence. */
export function segmentHeader(firstSeq: number): Buffer {
  const header = Buffer.alloc(SEGMENT_HEADER);
  header.writeUInt32LE(SEGMENT_MAGIC, 0);
  header.writeUInt32LE(WAL_FORMAT_VERSION, 4);
  header.writeBigUInt64LE(BigInt(firstSeq), 8);
  return header;
}

/** The record ids of a delete record, packed. */
export function packIds(ids: RecordId[]): Uint8Array {
  return idPackr.pack(ids);
}

export function encodeRecord(seq: number, b: WalBatch, kind: number): Uint8Array[] {
  const f16 = kind === TYPE_ADD && b.vectors instanceof Uint16Array;
  if (kind === TYPE_ADD && b.ids) return encodeWithIds(seq, b, f16 ? TYPE_ADD_F16_IDS : TYPE_ADD_IDS);
  const type = f16 ? TYPE_ADD_F16 : kind;
  // train and revoke records carry their row count in n and no offsets
  const countOnly = type !== TYPE_ADD && type !== TYPE_ADD_F16;
  const n = countOnly ? b.offsets[0]! : b.offsets.length - 1;
  const key = Buffer.from(b.key, 'utf8');
  const moved = b.movedFrom && b.movedFrom.length > 0 ? Buffer.from(JSON.stringify(b.movedFrom), 'utf8') : Buffer.alloc(0);
  const vecBytes = b.vectors.byteLength;
  // float16 vectors are padded to 4 bytes, so the u32 offsets after them stay aligned.
  const vecPad = new Uint8Array(align4(vecBytes) - vecBytes);
  const offBytes = countOnly ? 0 : b.offsets.byteLength;
  const payload = vecBytes + vecPad.byteLength + offBytes + b.blob.byteLength + key.byteLength + moved.byteLength;
  const total = Math.ceil((RECORD_HEADER + payload) / 8) * 8;
  const h = Buffer.alloc(RECORD_HEADER);
  h.writeUInt32LE(RECORD_MAGIC, 0);
  h.writeUInt32LE(total, 8);
  h.writeUInt32LE(type, 12);
  h.writeBigUInt64LE(BigInt(seq), 16);
  h.writeUInt32LE(n, 24);
  h.writeUInt32LE(b.dim, 28);
  h.writeUInt32LE(vecBytes, 32);
  h.writeUInt32LE(b.blob.byteLength, 36);
  h.writeUInt32LE(key.byteLength, 40);
  h.writeUInt32LE(moved.byteLength, 44);
  const vec = new Uint8Array(b.vectors.buffer, b.vectors.byteOffset, vecBytes);
  const off = new Uint8Array(b.offsets.buffer, b.offsets.byteOffset, offBytes);
  const pad = new Uint8Array(total - RECORD_HEADER - payload);
  let crc = crc32Update(0, h.subarray(8));
  for (const p of [vec, vecPad, off, b.blob, key, moved, pad]) crc = crc32Update(crc, p);
  h.writeUInt32LE(crc, 4);
  return [h, vec, vecPad, off, b.blob, key, moved, pad].filter((p) => p.byteLength > 0);
}

/**
 * An add record with ids: the ids section (u32 byte length, u32 reserved, msgpack array,
 * zero padding to 8 bytes) comes first in the body, then the add record's usual body. The
 * record is one write: ids and vectors are durable together or not at all.
 */
function encodeWithIds(seq: number, b: WalBatch, type: number): Uint8Array[] {
  const packed = packIds(b.ids!);
  const section = new Uint8Array(Math.ceil((8 + packed.byteLength) / 8) * 8);
  new DataView(section.buffer).setUint32(0, packed.byteLength, true);
  section.set(packed, 8);
  const parts = encodeRecord(seq, { ...b, ids: undefined }, TYPE_ADD);
  const h = parts[0] as Buffer;
  const total = h.readUInt32LE(8) + section.byteLength;
  h.writeUInt32LE(total, 8);
  h.writeUInt32LE(type, 12);
  let crc = crc32Update(0, h.subarray(8));
  crc = crc32Update(crc, section);
  for (const p of parts.slice(1)) crc = crc32Update(crc, p);
  h.writeUInt32LE(crc, 4);
  return [h, section, ...parts.slice(1)];
}

export function align4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/**
 * Decodes one record whose header `h` and body (a fresh, 8-aligned allocation) passed the
 * length and checksum checks; a string says why it cannot be read.
 */
export function decodeRecord(h: Buffer, raw: Buffer, total: number): { record: WalRecord; total: number } | string {
  let body = raw;
  let type = h.readUInt32LE(12);
  const seq = Number(h.readBigUInt64LE(16));
  const n = h.readUInt32LE(24);
  if (type === TYPE_DELETE) {
    const blobBytes = h.readUInt32LE(36);
    if (blobBytes > body.byteLength) return 'inconsistent delete record sizes';
    const ids = unpackIds(body.subarray(0, blobBytes), n);
    if (!ids) return 'unreadable delete record';
    return { record: { seq, type: 'delete', rows: n, ids, vectors: new Float32Array(0), dim: 0, blob: new Uint8Array(0), offsets: new Uint32Array(0), key: '' }, total };
  }
  let ids: RecordId[] | undefined;
  if (type === TYPE_ADD_IDS || type === TYPE_ADD_F16_IDS) {
    if (body.byteLength < 8) return 'torn ids section';
    const idBytes = body.readUInt32LE(0);
    const section = Math.ceil((8 + idBytes) / 8) * 8;
    if (section > body.byteLength) return 'inconsistent ids section size';
    ids = unpackIds(body.subarray(8, 8 + idBytes), n) ?? undefined;
    if (!ids) return 'unreadable ids section';
    // The rest is an ordinary add body, still 8-aligned (body is a fresh allocation, section a multiple of 8).
    body = body.subarray(section);
    type = type === TYPE_ADD_IDS ? TYPE_ADD : TYPE_ADD_F16;
  }
  if (type === TYPE_TRAIN) {
    return { record: { seq, type: 'train', rows: n, vectors: new Float32Array(0), dim: 0, blob: new Uint8Array(0), offsets: new Uint32Array(0), key: '' }, total };
  }
  if (type === TYPE_REVOKE) {
    const blobBytes = h.readUInt32LE(36);
    const keyBytes = h.readUInt32LE(40);
    if (blobBytes !== 8 || 8 + keyBytes > body.byteLength) return 'inconsistent revoke record sizes';
    const firstId = Number(body.readBigInt64LE(0));
    const key = body.toString('utf8', 8, 8 + keyBytes);
    return { record: { seq, type: 'revoke', rows: n, firstId, vectors: new Float32Array(0), dim: 0, blob: new Uint8Array(0), offsets: new Uint32Array(0), key }, total };
  }
  const movedBytes = h.readUInt32LE(44);
  if (type === TYPE_DELIVERED) {
    if (movedBytes > body.byteLength) return 'inconsistent delivered record sizes';
    const movedFrom = parseMoved(body.subarray(0, movedBytes));
    if (!movedFrom) return 'unreadable delivered record';
    return { record: { seq, type: 'delivered', rows: 0, vectors: new Float32Array(0), dim: 0, blob: new Uint8Array(0), offsets: new Uint32Array(0), key: '', movedFrom }, total };
  }
  if (type !== TYPE_ADD && type !== TYPE_ADD_F16) return `unknown record type ${type}`;
  const f16 = type === TYPE_ADD_F16;
  const dim = h.readUInt32LE(28);
  const vecBytes = h.readUInt32LE(32);
  const blobBytes = h.readUInt32LE(36);
  const keyBytes = h.readUInt32LE(40);
  const offBytes = (n + 1) * 4;
  const vecEnd = align4(vecBytes);
  if (vecBytes !== n * dim * (f16 ? 2 : 4) || vecEnd + offBytes + blobBytes + keyBytes + movedBytes > body.byteLength) return 'inconsistent record sizes';
  // body is a fresh, 8-aligned allocation of its own (Buffer.alloc never pools), so views are safe
  const vectors = f16 ? new Uint16Array(body.buffer, body.byteOffset, n * dim) : new Float32Array(body.buffer, body.byteOffset, n * dim);
  const offsets = new Uint32Array(body.buffer, body.byteOffset + vecEnd, n + 1);
  const blob = body.subarray(vecEnd + offBytes, vecEnd + offBytes + blobBytes);
  const keyEnd = vecEnd + offBytes + blobBytes + keyBytes;
  const key = body.toString('utf8', vecEnd + offBytes + blobBytes, keyEnd);
  const movedFrom = movedBytes > 0 ? parseMoved(body.subarray(keyEnd, keyEnd + movedBytes)) : undefined;
  if (movedFrom === null) return 'unreadable moved-from keys';
  return { record: { seq, type: 'add', rows: n, vectors, dim, blob, offsets, key, ...(movedFrom ? { movedFrom } : {}), ...(ids ? { ids } : {}) }, total };
}


/** The msgpack array of `n` record ids, or null when it is not that. */
function unpackIds(bytes: Uint8Array, n: number): RecordId[] | null {
  try {
    const v = idUnpackr.unpack(bytes) as unknown;
    if (Array.isArray(v) && v.length === n && v.every((x) => typeof x === 'string' || (typeof x === 'number' && Number.isSafeInteger(x)))) return v as RecordId[];
  } catch {
    // fall through
  }
  return null;
}

/** [[rank, key], ...] as logged; null when it is not that shape. */
function parseMoved(bytes: Uint8Array): Array<[number, string]> | null {
  try {
    const v = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as unknown;
    if (Array.isArray(v) && v.every((p) => Array.isArray(p) && p.length === 2 && Number.isSafeInteger(p[0]) && typeof p[1] === 'string')) return v as Array<[number, string]>;
  } catch {
    // fall through
  }
  return null;
}
