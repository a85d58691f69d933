/**
 * Record operations on one shard that read or reshape FAISS (issue 16): get by id,
 * iteration in internal-id order, range search, and the background compaction that removes
 * deleted vectors from FAISS. The bookkeeping itself lives in records.ts.
 *
 * Compaction: one remove_ids call for every dead vector still in FAISS (remove_ids costs
 * O(ntotal) per call whatever the count, so dead vectors are batched: a compaction starts
 * once they reach COMPACT_FRACTION of the index, or COMPACT_MIN). It runs between two
 * background add chunks (the adder parks), never during a snapshot cut. Flat renumbers the
 * vectors after a removed one (Records.remap follows); IVF keeps ids (later adds then pass
 * their internal ids explicitly). Other types (HNSW, PQ, transforms) cannot be compacted
 * safely: their dead vectors stay hidden by the tombstone bitset.
 */
import { FaissError, ValidationError } from '../errors.js';
import { scheduleMemoryTrim, type RangeSearchResult } from '../native/index.js';
import type { RecordId } from './records.js';
import type { Shard } from './shard.js';
import { copyRow } from './pending-buffer.js';

/** Compaction starts once dead vectors in FAISS reach this share of them... */
const COMPACT_FRACTION = 1 / 64;
/** ...or this many, whichever is larger. */
const COMPACT_MIN = 1024;
/** Deletes arriving close together share one compaction. */
const COMPACT_DEBOUNCE_MS = 50;
/** Most internal ids one iterate page scans (so a page over many dead ids stays bounded). */
const MAX_SCAN = 1 << 20;

/** BigInt64Array of [from, from + n). */
export function idRange(from: number, n: number): BigInt64Array {
  const out = new BigInt64Array(n);
  for (let i = 0; i < n; i++) out[i] = BigInt(from + i);
  return out;
}

/** How dead vectors can leave this shard's FAISS index. */
export function compactionKind(shard: Shard): 'renumber' | 'keep-ids' | 'none' {
  const index = shard.faissIndex;
  if (!index) return 'none';
  if (index.isIvf) return 'keep-ids';
  const factory = shard.cfg.indexBuilderType === null ? (shard.cfg.faissFactory ?? '').trim() : '';
  if (shard.cfg.indexBuilderType === 'flat' || factory === 'Flat') return 'renumber';
  return 'none';
}

const timers = new WeakMap<Shard, NodeJS.Timeout>();

/** Starts a compaction soon when enough dead vectors wait in FAISS (background; failures go to the shard's error). */
export function scheduleCompaction(shard: Shard): void {
  const waiting = shard.records.toRemove.length;
  if (waiting === 0 || timers.has(shard) || shard.compacting || shard.isClosed) return;
  const indexed = shard.indexedUpTo;
  if (waiting < Math.max(COMPACT_MIN, indexed * COMPACT_FRACTION)) return;
  if (compactionKind(shard) === 'none') return;
  const t = setTimeout(() => {
    timers.delete(shard);
    if (shard.isClosed) return;
    compact(shard).catch((err: Error) => shard.backgroundError(err));
  }, COMPACT_DEBOUNCE_MS);
  t.unref();
  timers.set(shard, t);
}

/** Removes every dead vector from FAISS now; resolves with how many FAISS removed. */
export function compact(shard: Shard): Promise<number> {
  shard.compacting ??= runCompaction(shard).finally(() => {
    shard.compacting = null;
  });
  return shard.compacting;
}

async function runCompaction(shard: Shard): Promise<number> {
  const kind = compactionKind(shard);
  const index = shard.faissIndex;
  if (kind === 'none' || !index) return 0;
  const renumbers = kind === 'renumber';
  return shard.betweenChunks(async () => {
    const { records } = shard;
    const count = records.toRemove.length;
    if (count === 0) return 0;
    const labels = records.labelsToRemove(count, renumbers, shard.indexedUpTo);
    const before = index.ntotal;
    let removed: number;
    const t0 = performance.now();
    try {
      removed = await index.removeIds(labels);
    } catch (err) {
      throw new FaissError(`compaction of ${count} deleted vectors failed: ${(err as Error).message}; they stay hidden and are retried with the next compaction`, { cause: err });
    }
    // Same tick as the removal's completion: searches translate labels with the new remap from now on.
    records.removed(count, renumbers, before);
    const ms = performance.now() - t0;
    scheduleMemoryTrim(); // hand the freed storage back to the OS
    Object.assign(shard.compactions, { count: shard.compactions.count + 1, removed: shard.compactions.removed + removed, ms: shard.compactions.ms + ms, lastMs: ms });
    return removed;
  });
}

export interface StoredRecord {
  id: RecordId | null;
  /** Internal id on this shard (the iteration cursor). */
  at: number;
  metadata: Uint8Array;
}

/**
 * Metadata and (optionally) vectors of live internal ids, read at one moment: between two
 * add chunks and never during a compaction, so FAISS positions and the buffer stay put.
 */
export async function readRecords(shard: Shard, ats: readonly number[], withVectors: boolean): Promise<{ records: StoredRecord[]; vectors: Float32Array | null }> {
  const records = ats.map((at) => ({ id: shard.records.idAt(at) ?? null, at, metadata: shard.metadata.get(at) }));
  if (!withVectors || ats.length === 0) return { records, vectors: withVectors ? new Float32Array(0) : null };
  const { dim } = shard.cfg;
  const vectors = new Float32Array(ats.length * dim);
  await shard.betweenChunks(async () => {
    const upTo = shard.indexedUpTo;
    const fromFaiss: number[] = [];
    const labels: bigint[] = [];
    const pending = shard.pendingBatches();
    ats.forEach((at, slot) => {
      if (at < upTo) {
        const label = shard.records.labelOf(at, upTo);
        if (label >= 0) {
          fromFaiss.push(slot);
          labels.push(BigInt(label));
        }
        return;
      }
      let lo = 0;
      let hi = pending.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (pending[mid]!.first <= at) lo = mid;
        else hi = mid - 1;
      }
      const b = pending[lo];
      if (b) copyRow(b.vectors, at - b.first, dim, vectors, slot * dim);
    });
    const index = shard.faissIndex;
    if (index && labels.length > 0) {
      const got = await index.reconstruct(BigInt64Array.from(labels));
      fromFaiss.forEach((slot, j) => vectors.set(got.subarray(j * dim, (j + 1) * dim), slot * dim));
    }
  });
  return { records, vectors };
}

/** Records by user id: the live version of each id this shard holds, and the ids it does not hold. */
export function findRecords(shard: Shard, ids: readonly RecordId[]): { ats: number[]; unknown: RecordId[] } {
  const ats: number[] = [];
  const unknown: RecordId[] = [];
  for (const id of ids) {
    const at = shard.records.lookup(id);
    if (at === undefined || shard.isHidden(at)) unknown.push(id);
    else ats.push(at);
  }
  return { ats, unknown };
}

/**
 * One page of iteration: up to `limit` live records with internal id >= `after`, in
 * internal-id order. `next` resumes after them (null: the shard is exhausted for now;
 * records stored later get higher internal ids, so a resumed iteration sees them).
 */
export function iteratePage(shard: Shard, after: number, limit: number): { ats: number[]; next: number | null } {
  const size = shard.metadata.size;
  const ats: number[] = [];
  let i = Math.max(0, after);
  const end = Math.min(size, i + MAX_SCAN);
  for (; i < end && ats.length < limit; i++) {
    if (!shard.isHidden(i) && shard.records.isCurrent(i)) ats.push(i);
  }
  return { ats, next: i < size ? i : null };
}

/** Most hits one rangeSearch call may collect on a shard (16M: ~200 MB of results; DFAISS_MAX_RANGE_HITS lowers it, for tests). */
export const MAX_RANGE_HITS = Math.min(1 << 24, Number(process.env.DFAISS_MAX_RANGE_HITS) || 1 << 24);

/**
 * FAISS range_search on this shard, translated to internal ids, deleted and replaced
 * vectors left out. Queries run in chunks of at most MAX_RANGE_HITS / ntotal (so one chunk
 * can never hold more than MAX_RANGE_HITS hits); a call whose hits exceed MAX_RANGE_HITS
 * fails with a ValidationError naming the radius instead of exhausting the server's memory.
 */
export async function rangeSearch(shard: Shard, queries: Float32Array, radius: number): Promise<RangeSearchResult> {
  const { dim } = shard.cfg;
  const n = queries.length / dim;
  const index = shard.faissIndex;
  if (!index) return { n, lims: new Float64Array(n + 1), labels: new BigInt64Array(0), distances: new Float32Array(0) };
  const lims = new Float64Array(n + 1);
  const labels: BigInt64Array[] = [];
  const distances: Float32Array[] = [];
  let total = 0;
  const chunk = Math.max(1, Math.floor(MAX_RANGE_HITS / Math.max(1, index.ntotal)));
  for (let q0 = 0; q0 < n; q0 += chunk) {
    const m = Math.min(chunk, n - q0);
    const r = await index.rangeSearch(queries.subarray(q0 * dim, (q0 + m) * dim), radius);
    const l = new BigInt64Array(r.labels.length);
    const d = new Float32Array(r.labels.length);
    let j = 0;
    for (let q = 0; q < m; q++) {
      for (let p = r.lims[q]!; p < r.lims[q + 1]!; p++) {
        const at = shard.records.internalOf(Number(r.labels[p]!));
        if (shard.isHidden(at)) continue;
        l[j] = BigInt(at);
        d[j] = r.distances[p]!;
        j++;
      }
      lims[q0 + q + 1] = total + j;
    }
    total += j;
    if (total > MAX_RANGE_HITS) {
      throw new ValidationError('radius', `a radius with at most ${MAX_RANGE_HITS} hits per call on one server (use a tighter radius, or fewer queries per call)`, `${radius} (more than ${total} hits)`);
    }
    labels.push(l.subarray(0, j));
    distances.push(d.subarray(0, j));
  }
  const outL = new BigInt64Array(total);
  const outD = new Float32Array(total);
  let off = 0;
  labels.forEach((l, i) => {
    outL.set(l, off);
    outD.set(distances[i]!, off);
    off += l.length;
  });
  return { n, lims, labels: outL, distances: outD };
}
