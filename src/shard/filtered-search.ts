/**
 * Filtered search on one shard (issue 17): the filter becomes the set of live records it
 * admits (src/filter/), and FAISS scores only those.
 *
 * - Few matches: an exact search over exactly the matching vectors (searchSubset: their
 *   stored codes reconstructed, so distances are the index's own and merge with other shards).
 * - Otherwise FAISS walks the index with an IDSelectorBitmap (searchSelected). IVF and HNSW
 *   walks see only part of the index, so a sparse selection can come back short: the walk
 *   starts at least as wide as the selectivity needs (nprobe ~ 2k nlist / matches, efSearch
 *   ~ 2k ntotal / matches), widens 4x for the queries still short, and ends with the exact
 *   subset search for any query still short. So k hits come back whenever k matches exist.
 * - Which of the two: `exactSearchLimit`, from the crossover measured here (the one place).
 * - Deleted, replaced and revoked records never match: the selection starts from the live
 *   records in FAISS; hits that died while the search ran are dropped on the way out.
 * - Payload indexes (cfg.indexedFields) live next to the shard, built lazily: each filter
 *   call first indexes the records stored since the last one (a slice at a time, yielding to
 *   the event loop; concurrent calls share one catch-up), so a restored shard rebuilds them
 *   from its metadata on the first filtered call.
 */
import type { CallSearchParams } from '../config/index.js';
import { Bits, PayloadIndex, SCAN_SLICE, selectRecords, yieldToLoop, type FilterNode, type FilterSource } from '../filter/index.js';
import type { FaissIndex } from '../native/index.js';
import { unpackStored } from '../protocol/metadata.js';
import type { RecordId } from './records.js';
import type { Shard, ShardSearchResult } from './shard.js';

/**
 * Most matches searched exactly (searchSubset) instead of walking the index with a selector.
 * Measured on 100k x 16 (bench/results/filter-crossover.txt, 1 and 10 queries, 1 thread):
 * - Flat: the subset search won at every selectivity up to 30% (the selector scans all
 *   vectors without BLAS), so Flat always searches its matches exactly.
 * - IVF: the crossover lay between ~100 (SQ codes, slow to reconstruct through the direct
 *   map) and ~3000 (Flat codes) matches: sqrt(k * ntotal) / 2 (500 at k=10, 100k).
 * - HNSW: a sparse selection makes the graph walk long (efSearch ~ k / selectivity): the
 *   subset search won up to ~1% of the shard for one query and ~10% for ten: 1/30 (3%).
 * Types FAISS cannot walk with a selector (fast-scan IVF, PQ, transforms, IDMap) always take the subset.
 */
export function exactSearchLimit(kind: FaissIndex['selectorKind'], ntotal: number, k: number): number {
  switch (kind) {
    case 'flat':
    case null:
      return Infinity;
    case 'ivf':
      return Math.sqrt(k * ntotal) / 2;
    case 'hnsw':
      return ntotal / 30;
  }
}

/**
 * DFAISS_FILTER_EXACT_MAX (tests only): overrides exactSearchLimit for the types FAISS can
 * walk with a selector, e.g. 0 to force the walk and its widening at any selectivity.
 */
const EXACT_MAX_OVERRIDE = process.env.DFAISS_FILTER_EXACT_MAX === undefined ? undefined : Number(process.env.DFAISS_FILTER_EXACT_MAX);

/** Widest HNSW walk tried before the exact subset search takes over. */
const MAX_EF_SEARCH = 16384;
/** Attempts when a compaction renumbers FAISS positions under a running search. */
const MAX_ATTEMPTS = 4;

export interface FilteredSearchResult extends ShardSearchResult {
  /** How the shard searched: its matches, and whether exactly or by a walk (with its widenings). */
  filtered: { matches: number; strategy: 'exact' | 'selector'; widenings: number; exactFallback: number };
}

const payloads = new WeakMap<Shard, { index: PayloadIndex; catchingUp: Promise<void> | null }>();

/** The shard's payload index, caught up with its stored records (null without indexedFields). */
export async function payloadIndex(shard: Shard): Promise<PayloadIndex | null> {
  const fields = shard.cfg.indexedFields;
  if (!fields || fields.length === 0) return null;
  let p = payloads.get(shard);
  if (!p) payloads.set(shard, (p = { index: new PayloadIndex(fields), catchingUp: null }));
  const entry = p;
  while (entry.index.size < shard.metadata.size) {
    entry.catchingUp ??= (async () => {
      while (entry.index.size < shard.metadata.size) {
        entry.index.append(Math.min(SCAN_SLICE, shard.metadata.size - entry.index.size), (i) => unpackStored(shard.metadata.get(i)));
        if (entry.index.size < shard.metadata.size) await yieldToLoop();
      }
    })().finally(() => {
      entry.catchingUp = null;
    });
    await entry.catchingUp;
  }
  return entry.index;
}

/** The selection's view of a shard. */
export async function filterSource(shard: Shard): Promise<FilterSource> {
  return {
    metadataOf: (i) => unpackStored(shard.metadata.get(i)),
    idOf: (i) => shard.records.idAt(i),
    lookup: (id: RecordId) => shard.records.lookup(id),
    payload: await payloadIndex(shard),
  };
}

/**
 * Live records among internal ids [from, to), as bits over [0, to): not deleted, replaced or
 * revoked. `currentOnly` also leaves out an old version still searchable while its
 * replacement waits to be indexed (get, iterate and delete see the new one).
 */
export function liveRecords(shard: Shard, from: number, to: number, currentOnly: boolean): Bits {
  const { records } = shard;
  if (from === 0 && records.deadTotal === 0 && records.replacing === 0 && shard.tombstones().length === 0) return Bits.full(to); // nothing hidden: the common case
  const bits = new Bits(to);
  for (let i = from; i < to; i++) if (!shard.isHidden(i) && (!currentOnly || records.isCurrent(i))) bits.set(i);
  return bits;
}

/**
 * The records a filter admits among the live ones in [from, to) (see liveRecords). Records
 * that die while a long scan yields are dropped by the caller (hits are checked again).
 */
export async function selectLive(shard: Shard, node: FilterNode, from: number, to: number, currentOnly: boolean): Promise<Bits> {
  const src = await filterSource(shard);
  return (await selectRecords(node, src, liveRecords(shard, from, to, currentOnly))).bits;
}

/** search() restricted to the records `filter` admits (searchable ones: in FAISS). */
export async function filteredSearch(shard: Shard, queries: Float32Array, k: number, withVectors: boolean, filter: FilterNode, params?: CallSearchParams): Promise<FilteredSearchResult> {
  const { dim } = shard.cfg;
  const n = queries.length / dim;
  for (let attempt = 1; ; attempt++) {
    const index = shard.faissIndex;
    if (!index) return { ...emptyResult(shard, n, k, withVectors), filtered: { matches: 0, strategy: 'exact', widenings: 0, exactFallback: 0 } };
    // A compaction renumbers Flat positions: let a running one finish, and notice one that ran meanwhile.
    while (shard.compacting) await shard.compacting.catch(() => 0);
    const generation = shard.compactions.count;
    const upTo = shard.indexedUpTo;
    const labels = faissLabels(shard, await selectLive(shard, filter, 0, upTo, false));
    const r = await searchLabels(index, queries, k, labels, params);
    const vectors = withVectors ? await index.reconstruct(validLabels(r.labels)) : null;
    if ((shard.compacting || shard.compactions.count !== generation) && attempt < MAX_ATTEMPTS) continue;
    return { ...toInternal(shard, r.labels, r.distances, vectors, n, k), filtered: { matches: labels.count(), strategy: r.strategy, widenings: r.widenings, exactFallback: r.exactFallback } };
  }
}

/**
 * The selected internal ids as bits over FAISS labels: the same bits while labels are
 * internal ids, FAISS positions once a Flat index was compacted (remap).
 */
function faissLabels(shard: Shard, selected: Bits): Bits {
  const remap = shard.records.remap;
  if (!remap) return selected;
  const out = new Bits(remap.len);
  for (let p = 0; p < remap.len; p++) if (selected.has(remap.arr[p]!)) out.set(p);
  return out;
}

/** The labels of a selection as FAISS takes them for the subset search (BigInt64, ascending). */
function labelList(labels: Bits, count: number): BigInt64Array {
  const out = new BigInt64Array(count);
  let j = 0;
  labels.forEach((l) => {
    out[j++] = BigInt(l);
  });
  return out;
}

interface LabelSearch {
  distances: Float32Array;
  labels: BigInt64Array;
  strategy: 'exact' | 'selector';
  widenings: number;
  exactFallback: number;
}

/** Top-k among the selected labels, exactly or by a widening walk; every query gets min(k, matches) hits. */
async function searchLabels(index: FaissIndex, queries: Float32Array, k: number, labels: Bits, params?: CallSearchParams): Promise<LabelSearch> {
  const m = labels.count();
  const kind = index.selectorKind;
  const ntotal = index.ntotal;
  const limit = kind !== null && EXACT_MAX_OVERRIDE !== undefined ? EXACT_MAX_OVERRIDE : exactSearchLimit(kind, ntotal, k);
  if (m === 0 || m <= limit) {
    const r = await index.searchSubset(queries, k, labelList(labels, m));
    return { distances: r.distances, labels: r.labels, strategy: 'exact', widenings: 0, exactFallback: 0 };
  }
  const dim = index.dim;
  const n = queries.length / dim;
  const want = Math.min(k, m);
  const bitmap = labels.bytes;
  const distances = new Float32Array(n * k);
  const out = new BigInt64Array(n * k);
  let todo = Array.from({ length: n }, (_, q) => q);
  let width = initialWidth(index, kind, k, m, params);
  let widenings = 0;
  for (;;) {
    const sub = pick(queries, todo, dim);
    const r = await index.searchSelected(sub, k, bitmap, width);
    const short: number[] = [];
    todo.forEach((q, j) => {
      distances.set(r.distances.subarray(j * k, (j + 1) * k), q * k);
      out.set(r.labels.subarray(j * k, (j + 1) * k), q * k);
      if (hitsIn(r.labels, j, k) < want) short.push(q);
    });
    todo = short;
    const next = todo.length > 0 ? widen(index, kind, width) : null;
    if (!next) break;
    width = next;
    widenings++;
  }
  // Still short after the widest walk (HNSW over a sparse selection, or a max_codes limit): exact.
  if (todo.length > 0) {
    const r = await index.searchSubset(pick(queries, todo, dim), k, labelList(labels, m));
    todo.forEach((q, j) => {
      distances.set(r.distances.subarray(j * k, (j + 1) * k), q * k);
      out.set(r.labels.subarray(j * k, (j + 1) * k), q * k);
    });
  }
  return { distances, labels: out, strategy: 'selector', widenings, exactFallback: todo.length };
}

/** The first walk: the caller's parameters, widened to what the selectivity needs to find k. */
function initialWidth(index: FaissIndex, kind: FaissIndex['selectorKind'], k: number, m: number, params?: CallSearchParams): CallSearchParams | undefined {
  if (kind === 'ivf') {
    const nlist = index.nlist;
    const need = Math.min(nlist, Math.ceil((2 * k * nlist) / m));
    const asked = params?.nprobe ?? index.nprobe;
    return need > asked ? { ...params, nprobe: need } : params;
  }
  if (kind === 'hnsw') {
    const need = Math.min(MAX_EF_SEARCH, Math.ceil((2 * k * index.ntotal) / m));
    const asked = params?.efSearch ?? 0;
    // FAISS's default efSearch is 16: below 64 the index's own setting is kept (no override lock).
    return need > Math.max(asked, 64) ? { ...params, efSearch: need } : params;
  }
  return params;
}

/** The next, 4x wider walk, or null when the walk is as wide as it gets (IVF: every list, which finds every match). */
function widen(index: FaissIndex, kind: FaissIndex['selectorKind'], width: CallSearchParams | undefined): CallSearchParams | null {
  if (kind === 'ivf') {
    const nlist = index.nlist;
    const now = width?.nprobe ?? index.nprobe;
    // max_codes bounds the scan whatever nprobe says: past every list, the exact fallback answers.
    if (now >= nlist) return null;
    return { ...width, nprobe: Math.min(nlist, now * 4) };
  }
  if (kind === 'hnsw') {
    const now = width?.efSearch ?? 64;
    if (now >= MAX_EF_SEARCH) return null;
    return { ...width, efSearch: Math.min(MAX_EF_SEARCH, Math.max(64, now * 4)) };
  }
  return null;
}

function pick(queries: Float32Array, rows: number[], dim: number): Float32Array {
  if (rows.length * dim === queries.length) return queries;
  const out = new Float32Array(rows.length * dim);
  rows.forEach((q, j) => out.set(queries.subarray(q * dim, (q + 1) * dim), j * dim));
  return out;
}

function hitsIn(labels: BigInt64Array, row: number, k: number): number {
  let c = 0;
  for (let i = row * k; i < (row + 1) * k; i++) if (labels[i]! >= 0n) c++;
  return c;
}

function validLabels(labels: BigInt64Array): BigInt64Array {
  return labels.filter((l) => l >= 0n);
}

function emptyResult(shard: Shard, n: number, k: number, withVectors: boolean): ShardSearchResult {
  const distances = new Float32Array(n * k).fill(shard.cfg.metric === 'l2' ? Infinity : -Infinity);
  return { n, k, distances, labels: new BigInt64Array(n * k).fill(-1n), ...(withVectors ? { vectors: new Float32Array(n * k * shard.cfg.dim) } : {}) };
}

/** FAISS labels -> internal ids, dropping hits that died while the search ran (the row closes up). */
function toInternal(shard: Shard, labels: BigInt64Array, distances: Float32Array, vectors: Float32Array | null, n: number, k: number): ShardSearchResult {
  const { dim } = shard.cfg;
  const out = emptyResult(shard, n, k, vectors !== null);
  let v = 0; // index into the reconstructed vectors (one per valid label, in order)
  for (let q = 0; q < n; q++) {
    let j = 0;
    for (let i = 0; i < k; i++) {
      const label = labels[q * k + i]!;
      if (label < 0n) continue;
      const slot = v++;
      const at = shard.records.internalOf(Number(label));
      if (shard.isHidden(at)) continue;
      out.labels[q * k + j] = BigInt(at);
      out.distances[q * k + j] = distances[q * k + i]!;
      if (vectors) out.vectors!.set(vectors.subarray(slot * dim, (slot + 1) * dim), (q * k + j) * dim);
      j++;
    }
  }
  return out;
}

/** Internal ids one filtered iterate page selects over at a time, and at most in all (as iteratePage scans). */
const ITERATE_WINDOW = 1 << 16;
const ITERATE_MAX_SCAN = 1 << 20;

/**
 * One page of iteration over the records a filter admits: like iteratePage (internal-id
 * order from `after`, `next` resumes, null once the shard is exhausted for now), the filter
 * evaluated a window of ids at a time, so a sparse filter still returns a bounded page.
 */
export async function filteredIteratePage(shard: Shard, after: number, limit: number, filter: FilterNode): Promise<{ ats: number[]; next: number | null }> {
  const size = shard.metadata.size;
  const ats: number[] = [];
  const end = Math.min(size, Math.max(0, after) + ITERATE_MAX_SCAN);
  let i = Math.max(0, after);
  while (i < end && ats.length < limit) {
    const to = Math.min(end, i + ITERATE_WINDOW);
    const picked = await selectLive(shard, filter, i, to, true);
    let last = to;
    picked.forEach((at) => {
      if (shard.isHidden(at)) return true; // died while the scan yielded
      ats.push(at);
      if (ats.length === limit) {
        last = at + 1;
        return false;
      }
      return true;
    });
    i = last;
  }
  return { ats, next: i < size ? i : null };
}

/** The record ids a filter admits on this shard now (current versions, buffered ones included), for delete by filter. */
export async function idsMatching(shard: Shard, filter: FilterNode): Promise<RecordId[]> {
  const out: RecordId[] = [];
  (await selectLive(shard, filter, 0, shard.metadata.size, true)).forEach((at) => {
    const id = shard.records.idAt(at);
    if (id !== undefined) out.push(id);
  });
  return out;
}
