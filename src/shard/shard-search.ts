/**
 * A shard's search: FAISS's top-k with the hidden vectors (revoked, deleted, replaced and
 * not yet compacted) filtered out, over-fetching by their count; small searches run inline
 * on the event loop, larger ones on a worker thread.
 */
import type { CallSearchParams, IndexCfg } from '../config/index.js';
import { MAX_K, type FaissIndex, type ProbeLists } from '../native/index.js';

/**
 * Searches estimated below this many multiply-adds (~0.3 ms) run on the event loop: the
 * hop to a worker thread and back costs two wake-ups, each waiting for a core when
 * several servers share a machine (IVF batch-1 queries are ~0.4M here; a Flat shard of
 * 125k x 128 is 16M and goes to a worker).
 */
const INLINE_SEARCH_WORK = 1 << 21;

export interface ShardSearchResult {
  n: number;
  k: number;
  distances: Float32Array;
  labels: BigInt64Array;
  vectors?: Float32Array;
  /** The request's probe lists were used (see SharedProbes). */
  preassigned?: boolean;
}

/** Probe lists computed once for a fan-out search (quantize) by a shard whose quantizer has `fingerprint`. */
export interface SharedProbes {
  fingerprint: string;
  lists: ProbeLists;
}

/** What the search needs to know of the shard's hidden vectors, judged when a search completes. */
export interface HiddenView {
  /** Vectors in FAISS that searches must skip. */
  hiddenInFaiss(): number;
  /** FAISS labels differ from internal ids (a compacted Flat index). */
  readonly remapped: boolean;
  /** FAISS label -> internal id. */
  internalOf(label: number): number;
  /** True when internal id `id` is never returned. */
  isHidden(id: number): boolean;
}

/** Searches what `index` holds, skipping hidden vectors. */
export async function searchIndex(
  index: FaissIndex,
  cfg: IndexCfg,
  hidden: HiddenView,
  req: { queries: Float32Array; k: number; withVectors: boolean; params?: CallSearchParams; probes?: SharedProbes },
): Promise<ShardSearchResult> {
  const { queries, k, withVectors, params } = req;
  const n = queries.length / cfg.dim;
  const pre = req.probes ? await usableProbes(index, req.probes, withVectors, params) : null;
  const mark = <T extends object>(r: T): T & { preassigned?: boolean } => (pre ? { ...r, preassigned: true } : r);
  // Hidden vectors are judged when the search completes: an upsert's old version dies in
  // the tick its new one enters FAISS, which may fall between issuing a search and its
  // answer. So the fast path (nothing hidden) is only trusted when that is still true after.
  if (hidden.hiddenInFaiss() === 0 && !hidden.remapped) {
    let r: ShardSearchResult | null = null;
    if (withVectors) r = await index.searchAndReconstruct(queries, k, params);
    else if (searchWork(index, n, params?.nprobe, pre !== null) <= INLINE_SEARCH_WORK) r = pre ? index.searchPreassignedInline(queries, k, pre, params) : index.searchInline(queries, k, params);
    r ??= pre ? await index.searchPreassigned(queries, k, pre, params) : await index.search(queries, k, params);
    if (hidden.hiddenInFaiss() === 0 && !hidden.remapped) return mark(r);
  }
  // Over-fetch by the hidden count so k live hits survive the filter (capped at MAX_K:
  // beyond that a query may get fewer than k). More may die while a search runs: then
  // it runs again with the new count (bounded).
  for (let attempt = 0; ; attempt++) {
    const kk = Math.min(MAX_K, k + hidden.hiddenInFaiss());
    const r: { distances: Float32Array; labels: BigInt64Array; vectors?: Float32Array } = withVectors
      ? await index.searchAndReconstruct(queries, kk, params)
      : pre
        ? await index.searchPreassigned(queries, kk, pre, params)
        : await index.search(queries, kk, params);
    const { out, short } = filterHits(cfg, hidden, r, n, k, kk, withVectors);
    if (!short || kk >= MAX_K || attempt >= 3) return mark(out);
  }
}

/**
 * The shared probe lists, when this index would have found the same ones itself: same
 * quantizer (fingerprint: a shard that trained on its own has other centroids) and the
 * probe count this call would use here. Not with vectors (search_and_reconstruct finds its
 * own lists) nor with efSearch (it tunes a quantizer this path does not run).
 */
async function usableProbes(index: FaissIndex, probes: SharedProbes, withVectors: boolean, params?: CallSearchParams): Promise<ProbeLists | null> {
  if (withVectors || params?.efSearch !== undefined) return null;
  if (probes.lists.nprobe !== Math.min(params?.nprobe ?? index.nprobe, index.nlist)) return null;
  return (await index.quantizerFingerprint()) === probes.fingerprint ? probes.lists : null;
}

/** A result with no hits (ids -1): what an untrained shard answers. */
export function noHits(cfg: IndexCfg, n: number, k: number, withVectors: boolean): ShardSearchResult {
  const distances = new Float32Array(n * k).fill(cfg.metric === 'l2' ? Infinity : -Infinity);
  return { n, k, distances, labels: new BigInt64Array(n * k).fill(-1n), ...(withVectors ? { vectors: new Float32Array(n * k * cfg.dim) } : {}) };
}

/**
 * The live hits of an over-fetched search, translated to internal ids. `short`: some
 * query got fewer than k although FAISS filled all kk slots (more may exist deeper).
 */
function filterHits(
  cfg: IndexCfg,
  hidden: HiddenView,
  r: { distances: Float32Array; labels: BigInt64Array; vectors?: Float32Array },
  n: number,
  k: number,
  kk: number,
  withVectors: boolean,
): { out: ShardSearchResult; short: boolean } {
  const out = noHits(cfg, n, k, withVectors);
  const { dim } = cfg;
  let short = false;
  for (let q = 0; q < n; q++) {
    let j = 0;
    let i = 0;
    for (; i < kk && j < k; i++) {
      const label = r.labels[q * kk + i]!;
      if (label < 0n) continue;
      // FAISS label -> internal id (they differ once a Flat index was compacted)
      const id = hidden.internalOf(Number(label));
      if (hidden.isHidden(id)) continue;
      out.distances[q * k + j] = r.distances[q * kk + i]!;
      out.labels[q * k + j] = BigInt(id);
      if (withVectors) out.vectors!.set(r.vectors!.subarray((q * kk + i) * dim, (q * kk + i + 1) * dim), (q * k + j) * dim);
      j++;
    }
    if (j < k && kk > k && r.labels[q * kk + kk - 1]! >= 0n) short = true;
  }
  return { out, short };
}

/** Multiply-adds of a search, roughly: IVF scans the quantizer (unless preassigned) and nprobe average lists; others scan everything. */
function searchWork(index: FaissIndex, n: number, nprobe = index.nprobe, preassigned = false): number {
  const nlist = index.nlist;
  const ntotal = index.ntotal;
  const perQuery = nlist > 0 ? (preassigned ? 0 : nlist) + Math.max(1, nprobe) * (ntotal / nlist) : ntotal;
  return n * perQuery * index.dim;
}
