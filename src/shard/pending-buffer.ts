/**
 * The pending buffer: vectors received and not yet in FAISS, oldest first. Batches may live
 * in a request's receive buffer (handed to FAISS without a copy) and are released once FAISS
 * has them; snapshots pin the buffer so no memory goes back to its pool while they read it.
 * float16 input waits as it arrived (half the bytes of float32) and is widened only for
 * FAISS's calls, one chunk at a time (Widener).
 */
import type { IndexCfg } from '../config/index.js';
import { fp16ToFp32, fp16ToFp32Async } from '../native/index.js';
import { prng } from '../util/random.js';
import { deriveChecked } from '../vectors.js';

/** Buffered vectors: float32, or float16 bit patterns as they arrived. */
export type PendingVectors = Float32Array | Uint16Array;

/** float16 input waits as it arrived, except for cosine, whose vectors are normalised in float32 as they arrive (and on replay). */
export const waitsAsFloat16 = (metric: IndexCfg['metric']): boolean => metric !== 'cosine';

/**
 * Widens float16 batches to float32 for FAISS, into one buffer it reuses (fresh memory costs
 * a page fault per 4 KiB here): each result is valid until the next widen(). Checked rows
 * stay checked; float32 passes through as it is.
 */
export class Widener {
  private scratch = new Float32Array(0);

  constructor(private readonly dim: number) {}

  async widen(v: PendingVectors): Promise<Float32Array> {
    if (v instanceof Float32Array) return v;
    if (this.scratch.length < v.length) this.scratch = new Float32Array(v.length);
    return deriveChecked(await fp16ToFp32Async(v, this.scratch.subarray(0, v.length)), this.dim, [v]);
  }
}

/** Copies row `row` of `v` into `out` at `at`, widening float16. */
export function copyRow(v: PendingVectors, row: number, dim: number, out: Float32Array, at: number): void {
  const src = v.subarray(row * dim, (row + 1) * dim);
  if (src instanceof Float32Array) out.set(src, at);
  else fp16ToFp32(src, out.subarray(at, at + dim));
}

/** Batches at least this large go to FAISS as they are (no concatenation copy). */
const SOLO_ROWS = 1024;

/** Vectors received and not yet in FAISS. */
export interface PendingBatch {
  vectors: PendingVectors;
  /** Returns their memory (a request's receive buffer) once FAISS has them. */
  release?: () => void;
  /** IVF: each vector's inverted list, computed ahead (see the adder's preassign). */
  assign?: BigInt64Array;
}

/** Up to `rows` of the oldest buffered rows as one matrix (see PendingBuffer.takeChunk). */
export interface Chunk {
  /** float16 when every batch it covers is (the adder widens it: Widener). */
  vectors: PendingVectors;
  assign?: BigInt64Array;
  rows: number;
  /** Buffer bytes the chunk frees once FAISS holds it. */
  bytes: number;
  /** Batches the chunk covers (the last one only in part when `rest` is set). */
  batches: number;
  /** What is left of the first batch when the chunk took only part of it. */
  rest: PendingBatch | null;
}

export class PendingBuffer {
  /** Oldest first. */
  batches: PendingBatch[] = [];
  /** Rows buffered. */
  count = 0;
  /** Bytes those rows take (2 per value for float16 kept as it arrived, else 4). */
  bytes = 0;
  /** Snapshots reading pending batches; releases wait until they are done. */
  private pins = 0;
  private deferredReleases: Array<() => void> = [];

  constructor(private readonly dim: number) {}

  push(batch: PendingBatch): void {
    this.batches.push(batch);
    this.count += batch.vectors.length / this.dim;
    this.bytes += batch.vectors.byteLength;
  }

  /** The buffered matrices, oldest first (for snapshots: pin them while they are read). */
  vectors(): PendingVectors[] {
    return this.batches.map((b) => b.vectors);
  }

  /** The buffered batches with the internal id of each one's first row, the oldest being `first`. */
  withIds(first: number): Array<{ first: number; vectors: PendingVectors }> {
    return this.batches.map((b) => {
      const out = { first, vectors: b.vectors };
      first += b.vectors.length / this.dim;
      return out;
    });
  }

  /**
   * Keeps the memory of today's pending batches valid (no buffer goes back to its pool)
   * until the returned function is called: a snapshot writes them after the cut.
   */
  pin(): () => void {
    this.pins++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.pins === 0) {
        const run = this.deferredReleases;
        this.deferredReleases = [];
        for (const r of run) r();
      }
    };
  }

  /**
   * Up to `rows` of the oldest buffered rows as one matrix. The buffer itself changes only
   * in commit(), after FAISS accepted the chunk, so a failed add loses nothing.
   */
  takeChunk(rows: number): Chunk {
    const { dim } = this;
    const first = this.batches[0]!;
    const firstRows = first.vectors.length / dim;
    if (firstRows >= rows || firstRows >= SOLO_ROWS) {
      rows = Math.min(rows, firstRows);
      const rest: PendingBatch | null =
        firstRows > rows ? { vectors: deriveChecked(first.vectors.subarray(rows * dim), dim, [first.vectors]), release: first.release, assign: first.assign?.subarray(rows) } : null;
      // Row ranges of a checked batch are checked: FAISS's binding does not scan them again.
      const vectors = firstRows > rows ? deriveChecked(first.vectors.subarray(0, rows * dim), dim, [first.vectors]) : first.vectors;
      return { vectors, assign: first.assign?.subarray(0, rows), rows, bytes: rows * dim * first.vectors.BYTES_PER_ELEMENT, batches: 1, rest };
    }
    let taken = 0;
    let batches = 0;
    const parts: PendingBatch[] = [];
    for (const b of this.batches) {
      const r = b.vectors.length / dim;
      if (taken + r > rows && taken > 0) break;
      parts.push(b);
      taken += r;
      batches++;
    }
    const bytes = parts.reduce((s, p) => s + p.vectors.byteLength, 0);
    if (parts.length === 1) return { vectors: parts[0]!.vectors, assign: parts[0]!.assign, rows: taken, bytes, batches, rest: null };
    // Small batches are joined; float16 stays float16 unless float32 batches are among them.
    const vectors = parts.every((p) => p.vectors instanceof Uint16Array) ? new Uint16Array(taken * dim) : new Float32Array(taken * dim);
    const assign = parts.every((p) => p.assign) ? new BigInt64Array(taken) : undefined;
    let off = 0;
    for (const p of parts) {
      if (vectors instanceof Float32Array && p.vectors instanceof Uint16Array) fp16ToFp32(p.vectors, vectors.subarray(off, off + p.vectors.length));
      else vectors.set(p.vectors, off);
      assign?.set(p.assign!, off / dim);
      off += p.vectors.length;
    }
    return { vectors: deriveChecked(vectors, dim, parts.map((p) => p.vectors)), assign, rows: taken, bytes, batches, rest: null };
  }

  /** FAISS holds `chunk`: drops it from the buffer and releases the batches it used up. */
  commit(chunk: Chunk): void {
    this.count -= chunk.rows;
    this.bytes -= chunk.bytes;
    const done = this.batches.splice(0, chunk.batches);
    if (chunk.rest) {
      // The rest still lives in the first batch's memory.
      this.batches.unshift(chunk.rest);
      done.pop();
    }
    for (const b of done) if (b.release) this.release(b.release);
  }

  private release(r: () => void): void {
    if (this.pins > 0) this.deferredReleases.push(r);
    else r();
  }

  /**
   * `count` buffered vectors picked uniformly at random among the first `total` (seeded:
   * retrains are reproducible), starting at position `offset` of that random order; written
   * into `out` when given (at least count * dim values), e.g. a trainer's share of a staged sample.
   */
  sampleRows(count: number, total: number, offset = 0, out: Float32Array = new Float32Array(count * this.dim)): Float32Array {
    const { dim } = this;
    // Partial Fisher-Yates over row numbers; the batches are addressed through a prefix table.
    const rows = new Uint32Array(total);
    for (let i = 0; i < total; i++) rows[i] = i;
    const rand = prng(0x5eed);
    for (let i = 0; i < offset + count; i++) {
      const j = i + Math.floor(rand() * (total - i));
      const t = rows[i]!;
      rows[i] = rows[j]!;
      rows[j] = t;
    }
    const starts: number[] = [];
    let s = 0;
    for (const b of this.batches) {
      starts.push(s);
      s += b.vectors.length / dim;
    }
    for (let i = 0; i < count; i++) {
      const r = rows[offset + i]!;
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid]! <= r) lo = mid;
        else hi = mid - 1;
      }
      copyRow(this.batches[lo]!.vectors, r - starts[lo]!, dim, out, i * dim);
    }
    return out;
  }
}
