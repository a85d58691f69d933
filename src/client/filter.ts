/**
 * The client-side filter of searchWithFilter: a predicate over each hit's metadata, and the
 * loop that over-fetches and, when too few hits survive, searches again with a larger k
 * until k match or the index is exhausted.
 */
import { ValidationError } from '../errors.js';
import { MAX_K } from '../vectors.js';
import type { SearchFilter, SearchResults } from './api.js';
import type { RecordId } from './records.js';

export function filterPredicate(filter: SearchFilter): (m: unknown) => boolean {
  if ('where' in filter) {
    if (typeof filter.where !== 'function') throw new ValidationError('filter.where', 'a function (metadata) => boolean', filter.where);
    return filter.where;
  }
  if (!Number.isSafeInteger(filter.filterPos) || filter.filterPos < 0) {
    throw new ValidationError('filter.filterPos', 'a non-negative integer position in the metadata', filter.filterPos);
  }
  const { filterPos, filterValue } = filter;
  return (m) => !(Array.isArray(m) && isEqual(m[filterPos], filterValue));
}

function isEqual(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** One round of the loop: merged hits of a search with `fetchK`, how many vectors the shards hold, who was missing. */
export interface FetchedRound {
  merged: SearchResults;
  ntotal: number;
  missing: Array<{ server: string; error: string }>;
}

/**
 * Runs `fetch` with k*3, then doubles (up to MAX_K) while some query has fewer than k
 * matching hits and the shards may hold more beyond the fetched depth.
 */
export async function searchFiltered(
  n: number,
  k: number,
  keep: (m: unknown) => boolean,
  opts: { returnEmbeddings: boolean; allowPartial: boolean },
  fetch: (fetchK: number) => Promise<FetchedRound>,
): Promise<SearchResults> {
  const { returnEmbeddings } = opts;
  let fetchK = Math.min(MAX_K, k * 3);
  for (;;) {
    const { merged, ntotal, missing } = await fetch(fetchK);
    const out: SearchResults = { scores: [], metadata: [], ...(returnEmbeddings ? { embeddings: [] } : {}), ...(merged.ids ? { ids: [] } : {}) };
    let short = false;
    for (let q = 0; q < n; q++) {
      const scores: number[] = [];
      const metas: unknown[] = [];
      const embs: Float32Array[] = [];
      const ids: Array<RecordId | null> = [];
      const row = merged.metadata[q]!;
      for (let i = 0; i < row.length && scores.length < k; i++) {
        if (!keep(row[i])) continue;
        scores.push(merged.scores[q]![i]!);
        metas.push(row[i]);
        if (merged.ids) ids.push(merged.ids[q]![i]!);
        if (returnEmbeddings) embs.push(merged.embeddings![q]![i]!);
      }
      out.ids?.push(ids);
      // Too few survivors, and the shards may hold more beyond fetchK: fetch deeper.
      if (scores.length < k && row.length === fetchK) short = true;
      out.scores.push(scores);
      out.metadata.push(metas);
      out.embeddings?.push(embs);
    }
    const exhausted = fetchK >= ntotal || fetchK >= MAX_K;
    if (opts.allowPartial) out.missing = missing;
    if (!short || exhausted) return out;
    fetchK = Math.min(MAX_K, fetchK * 2);
  }
}
