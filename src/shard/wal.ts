/**
 * Write-ahead log of one shard: every accepted batch (vectors + packed metadata) is
 * appended here before it is acknowledged. Group commit: batches that arrive while a
 * write is in progress are written together with one writev and made durable with one
 * fdatasync, so concurrent clients share the fsync cost.
 *
 * Records are applied to memory (the `apply` callback) in log order right after they are
 * durable, so memory order == log order and a replay reproduces the same internal ids.
 * A failed write (disk full, I/O error) is cut off the file again and rejected: nothing
 * is applied, earlier records are untouched. docs/storage.md describes the format.
 */
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Packr, Unpackr } from 'msgpackr';
import { crc32Update } from './crc.js';
import { StorageError } from '../errors.js';
import type { RecordId } from './records.js';

const idPackr = new Packr({ useRecords: false });
const idUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

import type { Durability } from '../config/index-cfg.js';

export type { Durability };

const SEGMENT_MAGIC = 0x53574644; // "DFWS"
const RECORD_MAGIC = 0x4c574644; // "DFWL"
/** 2 added revoke records, 3 moved-from keys, delivered records and float16 adds, 4 records with ids and deletes; older segments are still read. */
export const WAL_FORMAT_VERSION = 4;
const SEGMENT_HEADER = 16;
const RECORD_HEADER = 48;
const TYPE_ADD = 1;
/** Training started on the first `n` buffered rows (so a restart re-trains on the same rows). */
const TYPE_TRAIN = 2;
/** A batch key was revoked by its client: the ids it got (if any) are tombstoned, a later add with it is refused. */
const TYPE_REVOKE = 3;
/** Revocations this shard held for batches moved here (see WalBatch.movedFrom) were delivered to their servers. */
const TYPE_DELIVERED = 4;
/** An add batch whose vectors arrived as float16 and are logged as they arrived (half the bytes). */
const TYPE_ADD_F16 = 5;
/** TYPE_ADD / TYPE_ADD_F16 whose vectors carry record ids (an upsert: older versions of those ids are replaced). */
const TYPE_ADD_IDS = 6;
const TYPE_ADD_F16_IDS = 7;
/** Records deleted by id (the ids, msgpack, in the blob). */
const TYPE_DELETE = 8;
/** Replay refuses records claiming more than this (a corrupt length must not allocate GBs). */
const MAX_RECORD_BYTES = 2 ** 31;

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

interface Pending {
  seq: number;
  parts: Uint8Array[];
  bytes: number;
  apply: (seq: number) => unknown;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

const segmentName = (startSeq: number): string => `wal-${String(startSeq).padStart(16, '0')}.log`;

/** Told of each group commit: bytes written, and the fdatasync's seconds (null without fsync). */
export type WalObserver = (bytes: number, fsyncSeconds: number | null) => void;

export class WriteAheadLog {
  readonly dir: string;
  readonly durability: Durability;
  private fh: FileHandle | null = null;
  private size = 0;
  private segmentStart = 0;
  /** Highest sequence number handed out. */
  private lastSeq: number;
  private queue: Pending[] = [];
  private writing: Promise<void> | null = null;
  private rotateRequested = false;
  private closed = false;

  private constructor(dir: string, durability: Durability, lastSeq: number, private readonly observer?: WalObserver) {
    this.dir = dir;
    this.durability = durability;
    this.lastSeq = lastSeq;
  }

  /** Opens the log for appending after `lastSeq` (the highest sequence replayed). */
  static async open(dir: string, durability: Durability, lastSeq: number, observer?: WalObserver): Promise<WriteAheadLog> {
    await mkdir(dir, { recursive: true });
    const wal = new WriteAheadLog(dir, durability, lastSeq, observer);
    return wal;
  }

  get lastSequence(): number {
    return this.lastSeq;
  }

  /**
   * Appends a batch; once it is durable (per the durability mode) `apply` runs, in log
   * order, and the promise resolves with apply's result.
   */
  /** Logs that training started on the first `rows` buffered rows. */
  appendTrainMarker(rows: number): Promise<void> {
    return this.append({ vectors: new Float32Array(0), dim: 0, blob: new Uint8Array(0), offsets: new Uint32Array([rows]), key: '' }, () => undefined, TYPE_TRAIN);
  }

  /**
   * Logs the revocation of batch `key`: ids [firstId, firstId + rows) are tombstoned
   * (firstId -1: the key never arrived, and is refused if it does). The outcome is logged,
   * not just the key, so a replay does exactly what happened live.
   */
  appendRevoke<T>(key: string, firstId: number, rows: number, apply: (seq: number) => T): Promise<T> {
    const blob = new Uint8Array(8);
    new DataView(blob.buffer).setBigInt64(0, BigInt(firstId), true);
    return this.append({ vectors: new Float32Array(0), dim: 0, blob, offsets: new Uint32Array([rows]), key }, apply, TYPE_REVOKE);
  }

  /** Logs the deletion of records by id. */
  appendDelete<T>(ids: RecordId[], apply: (seq: number) => T): Promise<T> {
    const blob = idPackr.pack(ids);
    return this.append({ vectors: new Float32Array(0), dim: 0, blob, offsets: new Uint32Array([ids.length]), key: '' }, apply, TYPE_DELETE);
  }

  /** Logs that the revocations `pairs` ([rank, key]) of batches moved here were delivered. */
  appendDelivered<T>(pairs: Array<[number, string]>, apply: (seq: number) => T): Promise<T> {
    return this.append({ vectors: new Float32Array(0), dim: 0, blob: new Uint8Array(0), offsets: new Uint32Array([0]), key: '', movedFrom: pairs }, apply, TYPE_DELIVERED);
  }

  append<T>(batch: WalBatch, apply: (seq: number) => T, type = TYPE_ADD): Promise<T> {
    if (this.closed) return Promise.reject(new StorageError('write-ahead log is closed'));
    const seq = ++this.lastSeq;
    if (this.durability === 'none') {
      try {
        return Promise.resolve(apply(seq));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const parts = encodeRecord(seq, batch, type);
    const bytes = parts.reduce((s, p) => s + p.byteLength, 0);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ seq, parts, bytes, apply, resolve: resolve as (v: unknown) => void, reject });
      if (!this.writing) this.writing = this.writeLoop();
    });
  }

  /** Later records go to a new segment file (so older ones can be trimmed after a snapshot). */
  requestRotate(): void {
    this.rotateRequested = true;
  }

  /** Deletes segments whose records all have seq <= uptoSeq (never the one being written). */
  async trim(uptoSeq: number): Promise<number> {
    const segs = await listSegments(this.dir);
    let removed = 0;
    for (let i = 0; i + 1 < segs.length; i++) {
      const nextStart = segs[i + 1]!.start;
      if (nextStart - 1 <= uptoSeq && segs[i]!.start !== this.segmentStart) {
        await rm(join(this.dir, segs[i]!.name), { force: true });
        removed++;
      }
    }
    return removed;
  }

  /** Waits for queued writes and closes the file. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.writing) await this.writing;
    await this.fh?.close();
    this.fh = null;
  }

  private async writeLoop(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          await this.ensureSegment(batch[0]!.seq);
          const fh = this.fh!;
          const parts = batch.flatMap((p) => p.parts);
          const bytes = batch.reduce((s, p) => s + p.bytes, 0);
          let fsyncSeconds: number | null = null;
          try {
            await writeAll(fh, parts, this.size);
            if (this.durability === 'fsync') {
              const t0 = performance.now();
              await fh.datasync();
              fsyncSeconds = (performance.now() - t0) / 1000;
            }
          } catch (err) {
            // Cut the partial write off so the log ends with complete records again.
            await fh.truncate(this.size).catch(() => {});
            throw err;
          }
          this.size += bytes;
          observe(this.observer, bytes, fsyncSeconds);
        } catch (err) {
          const e = new StorageError(
            `could not write the batch to the write-ahead log in ${this.dir}: ${(err as Error).message}; it was not stored (earlier data is safe) — free disk space or fix the folder's permissions, then retry`,
            { cause: err },
          );
          for (const p of batch) p.reject(e);
          continue;
        }
        for (const p of batch) {
          try {
            p.resolve(p.apply(p.seq));
          } catch (err) {
            p.reject(err as Error);
          }
        }
      }
    } finally {
      this.writing = null;
    }
  }

  private async ensureSegment(firstSeq: number): Promise<void> {
    if (this.fh && !this.rotateRequested) return;
    this.rotateRequested = false;
    if (this.fh) await this.fh.close();
    const name = segmentName(firstSeq);
    const fh = await open(join(this.dir, name), 'w');
    const header = Buffer.alloc(SEGMENT_HEADER);
    header.writeUInt32LE(SEGMENT_MAGIC, 0);
    header.writeUInt32LE(WAL_FORMAT_VERSION, 4);
    header.writeBigUInt64LE(BigInt(firstSeq), 8);
    await fh.write(header, 0, SEGMENT_HEADER, 0);
    await fh.sync();
    await syncDir(this.dir);
    this.fh = fh;
    this.size = SEGMENT_HEADER;
    this.segmentStart = firstSeq;
  }
}

/** An observer's bug must not fail a write that is already durable. */
function observe(observer: WalObserver | undefined, bytes: number, fsyncSeconds: number | null): void {
  try {
    observer?.(bytes, fsyncSeconds);
  } catch {
    // ignored: metrics only
  }
}

/** Writes `parts` back to back from `position`, 512 buffers per writev, finishing short writes. */
export async function writeAll(fh: FileHandle, parts: readonly Uint8Array[], position: number): Promise<void> {
  // writev takes at most IOV_MAX (1024) buffers per call on Linux.
  let pos = position;
  for (let i = 0; i < parts.length; i += 512) {
    const chunk = parts.slice(i, i + 512);
    const want = chunk.reduce((s, p) => s + p.byteLength, 0);
    let { bytesWritten } = await fh.writev(chunk, pos);
    pos += bytesWritten;
    if (bytesWritten < want) {
      // Short write: finish the rest one buffer at a time.
      let skip = bytesWritten;
      for (const p of chunk) {
        if (skip >= p.byteLength) {
          skip -= p.byteLength;
          continue;
        }
        const rest = p.subarray(skip);
        skip = 0;
        let off = 0;
        while (off < rest.byteLength) {
          ({ bytesWritten } = await fh.write(rest, off, rest.byteLength - off, pos));
          if (bytesWritten === 0) throw new Error('write made no progress');
          off += bytesWritten;
          pos += bytesWritten;
        }
      }
    }
  }
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function encodeRecord(seq: number, b: WalBatch, kind: number): Uint8Array[] {
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
  const packed = idPackr.pack(b.ids);
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

function align4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/** The entries of `dir`; none when it does not exist (yet). Other errors are thrown. */
export async function readdirIfExists(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export async function listSegments(dir: string): Promise<Array<{ name: string; start: number }>> {
  return (await readdirIfExists(dir))
    .map((name) => ({ name, m: /^wal-(\d{16})\.log$/.exec(name) }))
    .filter((x) => x.m)
    .map((x) => ({ name: x.name, start: Number(x.m![1]) }))
    .sort((a, b) => a.start - b.start);
}

export interface ReplayReport {
  records: number;
  lastSeq: number;
  /** What was skipped and why (torn tails, corrupt records). */
  skipped: string[];
}

/**
 * Reads every record with seq > afterSeq, in order, streaming (records are read one at a
 * time, never a whole segment). Stops at the first torn or corrupt record of a segment:
 * only the tail of a log can be torn by a crash; the rest of that segment is reported.
 */
export async function replayWal(dir: string, afterSeq: number, onRecord: (r: WalRecord) => void): Promise<ReplayReport> {
  const report: ReplayReport = { records: 0, lastSeq: afterSeq, skipped: [] };
  for (const seg of await listSegments(dir)) {
    const fh = await open(join(dir, seg.name), 'r');
    try {
      const { size } = await fh.stat();
      const head = Buffer.alloc(SEGMENT_HEADER);
      const { bytesRead } = await fh.read(head, 0, SEGMENT_HEADER, 0);
      if (bytesRead < SEGMENT_HEADER || head.readUInt32LE(0) !== SEGMENT_MAGIC) {
        report.skipped.push(`${seg.name}: no valid segment header (${size} bytes), skipped`);
        continue;
      }
      if (head.readUInt32LE(4) > WAL_FORMAT_VERSION) {
        throw new StorageError(`${seg.name}: WAL format ${head.readUInt32LE(4)} is newer than this dfaiss reads (${WAL_FORMAT_VERSION}); upgrade dfaiss`);
      }
      let pos = SEGMENT_HEADER;
      while (pos < size) {
        const problem = await readRecordAt(fh, pos, size);
        if (typeof problem === 'string') {
          report.skipped.push(`${seg.name} @${pos}: ${problem}; ignored ${size - pos} bytes from there`);
          break;
        }
        const { record, total } = problem;
        pos += total;
        if (record.seq <= report.lastSeq) continue;
        onRecord(record);
        report.records++;
        report.lastSeq = record.seq;
      }
    } finally {
      await fh.close();
    }
  }
  return report;
}

async function readRecordAt(fh: FileHandle, pos: number, size: number): Promise<{ record: WalRecord; total: number } | string> {
  if (size - pos < RECORD_HEADER) return 'torn record header';
  const h = Buffer.alloc(RECORD_HEADER);
  await fh.read(h, 0, RECORD_HEADER, pos);
  if (h.readUInt32LE(0) !== RECORD_MAGIC) return 'bad record magic';
  const total = h.readUInt32LE(8);
  if (total < RECORD_HEADER || total % 8 !== 0 || total > MAX_RECORD_BYTES) return `bad record length ${total}`;
  if (pos + total > size) return 'torn record (file ends inside it)';
  let body = Buffer.alloc(total - RECORD_HEADER);
  await fh.read(body, 0, body.byteLength, pos + RECORD_HEADER);
  let crc = crc32Update(0, h.subarray(8));
  crc = crc32Update(crc, body);
  if (crc !== h.readUInt32LE(4)) return 'checksum mismatch';
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
