/**
 * Exact k-NN by brute force in TypeScript, and recall@k. Used to check FAISS results and
 * to measure recall in the demo and benchmark; deliberately independent of FAISS.
 */
import type { FaissMetric } from '../vectors.js';

/** Brute-force top-k: ids (-1 padded) and scores, row-major n*k. Ties go to the lower id. */
export function exactSearch(
  base: Float32Array,
  queries: Float32Array,
  dim: number,
  k: number,
  metric: FaissMetric,
): { labels: BigInt64Array; distances: Float32Array } {
  const nb = base.length / dim;
  const nq = queries.length / dim;
  const labels = new BigInt64Array(nq * k).fill(-1n);
  const distances = new Float32Array(nq * k).fill(metric === 'l2' ? Infinity : -Infinity);
  const better = metric === 'l2' ? (a: number, b: number) => a < b : (a: number, b: number) => a > b;
  const topIds = new Int32Array(k);
  const topScores = new Float64Array(k);
  for (let q = 0; q < nq; q++) {
    let count = 0;
    for (let i = 0; i < nb; i++) {
      let s = 0;
      if (metric === 'l2') {
        for (let j = 0; j < dim; j++) {
          const d = queries[q * dim + j]! - base[i * dim + j]!;
          s += d * d;
        }
      } else {
        for (let j = 0; j < dim; j++) s += queries[q * dim + j]! * base[i * dim + j]!;
      }
      // insertion into a sorted top-k list (k is small)
      if (count < k || better(s, topScores[count - 1]!)) {
        let pos = count < k ? count++ : k - 1;
        while (pos > 0 && better(s, topScores[pos - 1]!)) {
          topScores[pos] = topScores[pos - 1]!;
          topIds[pos] = topIds[pos - 1]!;
          pos--;
        }
        topScores[pos] = s;
        topIds[pos] = i;
      }
    }
    for (let r = 0; r < count; r++) {
      labels[q * k + r] = BigInt(topIds[r]!);
      distances[q * k + r] = topScores[r]!;
    }
  }
  return { labels, distances };
}

/**
 * Fraction of the true top-k ids found in the approximate top-k (per query, averaged).
 * Ids are FAISS labels (BigInt64Array) or global row numbers (Int32Array); negative = none.
 */
export function recallAtK<T extends BigInt64Array | Int32Array>(truth: T, found: T, nq: number, k: number, kFound = k): number {
  let hits = 0;
  let total = 0;
  for (let q = 0; q < nq; q++) {
    const got = new Set<number | bigint>();
    for (let r = 0; r < kFound; r++) got.add(found[q * kFound + r]!);
    for (let r = 0; r < k; r++) {
      const t = truth[q * k + r]!;
      if (t < 0) continue;
      total++;
      if (got.has(t)) hits++;
    }
  }
  return total === 0 ? 1 : hits / total;
}
