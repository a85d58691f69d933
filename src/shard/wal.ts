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
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageError } from '../errors.js';
import { dropFileCache } from '../native/index.js';
import type { Durability } from '../config/index-cfg.js';
import type { RecordId } from './records.js';
import { listSegments, segmentName, syncDir, writeAll } from './wal-files.js';
import { TYPE_ADD, TYPE_DELETE, TYPE_DELIVERED, TYPE_REVOKE, TYPE_TRAIN, encodeRecord, packIds, segmentHeader, SEGMENT_HEADER, type WalBatch } from './wal-format.js';

export type { Durability };
export { WAL_FORMAT_VERSION, type WalBatch, type WalRecord } from './wal-format.js';
export { listSegments, readdirIfExists, syncDir, writeAll } from './wal-files.js';
export { replayWal, type ReplayReport } from './wal-replay.js';

interface Pending {
  seq: number;
  parts: Uint8Array[];
  bytes: number;
  apply: (seq: number) => unknown;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

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
    const blob = packIds(ids);
    return this.append({ vectors: new Float32Array(0), dim: 0, blob, offsets: new Uint32Array([ids.length]), key: '' }, apply, TYPE_DELETE);
  }

  /** Logs that the revocations `pairs` ([rank, key]) of batches moved here were delivered. */
  appendDelivered<T>(pairs: Array<[number, string]>, apply: (seq: number) => T): Promise<T> {
    return this.append({ vectors: new Float32Array(0), dim: 0, blob: new Uint8Array(0), offsets: new Uint32Array([0]), key: '', movedFrom: pairs }, apply, TYPE_DELIVERED);
  }

  /**
   * Appends a batch; once it is durable (per the durability mode) `apply` runs, in log
   * order, and the promise resolves with apply's result.
   */
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

  /**
   * Deletes segments whose records all have seq <= uptoSeq. A segment's records end where
   * the next one starts; the newest one's end at the newest sequence handed out, so it goes
   * too when nothing was logged after uptoSeq and no write is under way (the next append
   * opens a new segment). Before, the segment a snapshot had just covered stayed on disk
   * until some later write rotated it away: after a bulk load, the whole load.
   */
  async trim(uptoSeq: number): Promise<number> {
    const segs = await listSegments(this.dir);
    let removed = 0;
    for (let i = 0; i < segs.length; i++) {
      const seg = segs[i]!;
      const next = segs[i + 1];
      if (next) {
        if (next.start - 1 > uptoSeq || seg.start === this.segmentStart) continue;
      } else {
        // Decided synchronously: an append starting later sees fh === null and opens a new file.
        if (this.lastSeq > uptoSeq || this.writing || this.queue.length > 0) continue;
        if (seg.start === this.segmentStart && this.fh) {
          const fh = this.fh;
          this.fh = null;
          this.segmentStart = -1;
          await fh.close();
        }
      }
      await rm(join(this.dir, seg.name), { force: true });
      removed++;
    }
    if (removed > 0) await syncDir(this.dir);
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
              // Durable now, and read again only by a restart: hand the pages back so the
              // next batch's write reuses warm memory instead of fresh page cache.
              dropFileCache(fh.fd, this.size, bytes);
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
    await fh.write(segmentHeader(firstSeq), 0, SEGMENT_HEADER, 0);
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

