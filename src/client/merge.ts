/**
 * Global top-k from per-server top-k lists. Each server's list for a query is sorted
 * best-first, so a k-way merge with a heap of one head per server yields the global
 * order in O(k log S). Ties break by server order, then position: the same inputs give
 * the same result every time.
 */
import type { Metric } from '../vectors.js';
import { metadataReader } from '../protocol/metadata.js';
import type { SearchResults } from './api.js';
import type { RecordId } from './records.js';


export interface ShardHits {
  /** n*k scores, row-major. */
  distances: Float32Array;
  /** n*k local ids, -1 for empty slots (which sort last). */
  labels: BigInt64Array;
  /** Hits per query in this shard's reply. */
  k: number;
}

/** One server's search reply: its hits plus the packed metadata (and ids, vectors) they point at. */
export interface ReplyHits extends ShardHits {
  blob: Uint8Array;
  offsets: Uint32Array;
  vectors?: Float32Array;
  metric: Metric;
  ids?: { blob: Uint8Array; offsets: Uint32Array };
}

/** One merged hit: which shard, and which slot of its reply. */
export interface MergedHit {
  shard: number;
  slot: number;
  score: number;
}

/** Where mergeQueryInto writes its hits (reused across queries: no allocation per hit). */
export interface MergeOutput {
  shard: Int32Array;
  slot: Int32Array;
  score: Float64Array;
}

export function mergeOutput(k: number): MergeOutput {
  return { shard: new Int32Array(k), slot: new Int32Array(k), score: new Float64Array(k) };
}

/** Merges query q's lists; returns at most k hits, best first (l2: smallest, dot: largest). */
export function mergeQuery(shards: readonly ShardHits[], q: number, k: number, metric: Metric): MergedHit[] {
  const out = mergeOutput(k);
  const n = mergeQueryInto(shards, q, k, metric, out);
  return Array.from({ length: n }, (_, i) => ({ shard: out.shard[i]!, slot: out.slot[i]!, score: out.score[i]! }));
}

/**
 * mergeQuery into typed arrays: hit i is slot out.slot[i] of shard out.shard[i]'s reply,
 * with score out.score[i]. Returns the number of hits (at most k).
 */
export function mergeQueryInto(shards: readonly ShardHits[], q: number, k: number, metric: Metric, out: MergeOutput): number {
  const S = shards.length;
  const heapShard = new Int32Array(S);
  const heapPos = new Int32Array(S);
  const heapScore = new Float64Array(S);
  let size = 0;
  const sign = metric === 'l2' ? 1 : -1; // compare sign*score ascending
  const less = (a: number, b: number): boolean =>
    heapScore[a]! < heapScore[b]! || (heapScore[a] === heapScore[b] && heapShard[a]! < heapShard[b]!);
  const swap = (a: number, b: number): void => {
    const s = heapShard[a]!, p = heapPos[a]!, v = heapScore[a]!;
    heapShard[a] = heapShard[b]!; heapPos[a] = heapPos[b]!; heapScore[a] = heapScore[b]!;
    heapShard[b] = s; heapPos[b] = p; heapScore[b] = v;
  };
  const up = (i: number): void => {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(i, parent)) return;
      swap(i, parent);
      i = parent;
    }
  };
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && less(l, m)) m = l;
      if (r < size && less(r, m)) m = r;
      if (m === i) return;
      swap(i, m);
      i = m;
    }
  };
  const push = (s: number, pos: number): void => {
    const sh = shards[s]!;
    if (pos >= sh.k || sh.labels[q * sh.k + pos]! < 0n) return;
    heapShard[size] = s;
    heapPos[size] = pos;
    heapScore[size] = sign * sh.distances[q * sh.k + pos]!;
    up(size++);
  };
  for (let s = 0; s < S; s++) push(s, 0);
  let n = 0;
  while (n < k && size > 0) {
    const s = heapShard[0]!;
    const pos = heapPos[0]!;
    out.shard[n] = s;
    out.slot[n] = q * shards[s]!.k + pos;
    out.score[n] = sign * heapScore[0]!;
    n++;
    size--;
    if (size > 0) {
      swap(0, size);
      down(0);
    }
    push(s, pos + 1);
  }
  return n;
}

/** The global top-k of each of n queries from every server's reply, with metadata (and ids, vectors) decoded. */
export function mergeReplies(shards: readonly ReplyHits[], n: number, k: number, index: { dim: number; metric: Metric }, returnEmbeddings: boolean): SearchResults {
  const metric = shards[0]?.metric ?? index.metric;
  const out: SearchResults = { scores: [], metadata: [], ...(returnEmbeddings ? { embeddings: [] } : {}) };
  const readers = shards.map((s) => metadataReader(s.blob, s.offsets));
  const idReaders = shards.some((s) => s.ids) ? shards.map((s) => (s.ids ? metadataReader(s.ids.blob, s.ids.offsets, 'ids') : () => null)) : null;
  if (idReaders) out.ids = [];
  const hits = mergeOutput(k);
  for (let q = 0; q < n; q++) {
    const count = mergeQueryInto(shards, q, k, metric, hits);
    const scores = new Array<number>(count);
    const metas = new Array<unknown>(count);
    const ids = idReaders ? new Array<RecordId | null>(count) : null;
    for (let i = 0; i < count; i++) {
      scores[i] = hits.score[i]!;
      metas[i] = readers[hits.shard[i]!]!(hits.slot[i]!);
      if (ids) ids[i] = (idReaders![hits.shard[i]!]!(hits.slot[i]!) ?? null) as RecordId | null;
    }
    out.scores.push(scores);
    out.metadata.push(metas);
    if (ids) out.ids!.push(ids);
    if (returnEmbeddings) {
      const embs = new Array<Float32Array>(count);
      for (let i = 0; i < count; i++) embs[i] = shards[hits.shard[i]!]!.vectors!.slice(hits.slot[i]! * index.dim, (hits.slot[i]! + 1) * index.dim);
      out.embeddings!.push(embs);
    }
  }
  return out;
}
