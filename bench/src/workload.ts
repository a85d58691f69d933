/**
 * The benchmark's data sets and the search workload shared by every side (dfaiss and the
 * in-process limits), so each side runs exactly the same queries in the same order.
 */
import { fashionMnistAvailable, loadFashionMnist } from '../../dist/datasets/fashion-mnist.js';
import { SyntheticDataset } from '../../dist/datasets/synthetic.js';
import { latencyStats, monoUs, nowMs, type LatencyStats } from './stats.js';

export const K = 10;
export const SERVERS = 4;

export type DatasetName = 'synthetic' | 'fashion-mnist';
export type IndexKind = 'flat' | 'ivf';

export const IVF_CENTROIDS = 1024;
export const IVF_NPROBE = 16;
export const IVF_FACTORY = `IVF${IVF_CENTROIDS},Flat`;

export interface Dataset {
  name: DatasetName;
  description: string;
  dim: number;
  /** Base vectors, row-major. */
  n: number;
  base: Float32Array;
  /** Rows per addIndexData batch; n / batch is a multiple of SERVERS so every shard gets the same share. */
  batch: number;
  /** Query vectors (distinct from the base), row-major. */
  nq: number;
  queries: Float32Array;
  /** IVF training vectors per shard: each of the SERVERS shards trains on its whole share. */
  trainPerShard: number;
}

export interface Sizes {
  syntheticN: number;
  fashionN: number;
  /** Queries for recall and the batched runs (a multiple of 100). */
  nq: number;
}

export const FULL_SIZES: Sizes = { syntheticN: 500_000, fashionN: 60_000, nq: 1000 };
export const QUICK_SIZES: Sizes = { syntheticN: 100_000, fashionN: 20_000, nq: 500 };

export const SYNTHETIC_SEED = 1234;

export function loadDataset(name: DatasetName, sizes: Sizes): Dataset {
  if (name === 'synthetic') {
    const dim = 128;
    const ds = new SyntheticDataset({ dim, seed: SYNTHETIC_SEED });
    const n = sizes.syntheticN;
    const batch = 5000;
    checkBatching(n, batch);
    return {
      name,
      description: `SyntheticDataset({ dim: 128, seed: ${SYNTHETIC_SEED} }) (64 clusters on a curved 10-d manifold): ${n} base, ${sizes.nq} queries`,
      dim,
      n,
      base: ds.base(n),
      batch,
      nq: sizes.nq,
      queries: ds.queries(sizes.nq),
      trainPerShard: n / SERVERS,
    };
  }
  if (!fashionMnistAvailable()) throw new Error('Fashion-MNIST is missing: install dataset-fashion-mnist (scripts/setup.sh does)');
  const fm = loadFashionMnist({ trainLimit: sizes.fashionN, testLimit: sizes.nq });
  const n = fm.train.length / fm.dim;
  const batch = 2500;
  checkBatching(n, batch);
  return {
    name,
    description: `Fashion-MNIST (Debian dataset-fashion-mnist), pixels / 255: ${n} train images as base, the first ${sizes.nq} test images as queries`,
    dim: fm.dim,
    n,
    base: fm.train,
    batch,
    nq: sizes.nq,
    queries: fm.test,
    trainPerShard: n / SERVERS,
  };
}

function checkBatching(n: number, batch: number): void {
  if (n % (batch * SERVERS) !== 0) throw new Error(`n=${n} must be a multiple of batch x servers = ${batch * SERVERS}`);
}

/** Batch b of the data set: a view of its rows, and its metadata (the global row numbers). */
export function batchRows(ds: Dataset, b: number): { vectors: Float32Array; first: number; rows: number } {
  const first = b * ds.batch;
  const rows = Math.min(ds.batch, ds.n - first);
  return { vectors: ds.base.subarray(first * ds.dim, (first + rows) * ds.dim), first, rows };
}

export function numBatches(ds: Dataset): number {
  return Math.ceil(ds.n / ds.batch);
}

/** One side of the comparison: searches a batch of queries and returns global row ids (n*K, -1 = none). */
export interface Searcher {
  /** Runs the search; the raw result is converted to ids only when recall is measured (outside timing). */
  search(queries: Float32Array): Promise<unknown>;
  ids(raw: unknown, nq: number): Int32Array;
}

export interface SearchCounts {
  /** Untimed single-query searches before measuring (plus one batch-100 search per 60). */
  warmup: number;
  /** Sequential single-query searches (>= 300). */
  single: number;
  /** Batch-10 searches (below FAISS's BLAS switch at 20 queries). */
  reps10: number;
  /** Batch-100 searches (the first nq/100 also give recall). */
  reps100: number;
  /** dfaiss ingest repetitions (fresh cluster each; median reported). */
  ingestReps: number;
}

export const FULL_COUNTS: SearchCounts = { warmup: 600, single: 500, reps10: 100, reps100: 30, ingestReps: 3 };
export const QUICK_COUNTS: SearchCounts = { warmup: 300, single: 300, reps10: 30, reps100: 10, ingestReps: 1 };

export interface SearchMeasurements {
  /** Batch 1, per query, ms. */
  batch1: LatencyStats;
  batch10: { reps: number; qps: number; meanMs: number };
  batch100: { reps: number; qps: number; meanMs: number };
  /** Global ids of the top-K of every query (from the batch-100 pass), nq*K. */
  ids: Int32Array;
  /** Phase boundaries, CLOCK_MONOTONIC µs (match them with cpuprofile times: cpuprofile.js --abs). */
  marksUs: Record<string, [number, number]>;
}

/** Runs the shared search workload: warmup, batch 1, batch 10, batch 100 (with recall ids). */
export async function measureSearch(ds: Dataset, s: Searcher, counts: SearchCounts): Promise<SearchMeasurements> {
  const { dim, nq, queries } = ds;
  const row = (i: number): Float32Array => queries.subarray((i % nq) * dim, ((i % nq) + 1) * dim);
  const slice = (size: number, r: number): Float32Array => {
    const per = Math.floor(nq / size);
    const start = (r % per) * size;
    return queries.subarray(start * dim, (start + size) * dim);
  };

  // Warm-up, untimed, the same on every side: V8 compiles the search path (client, and
  // servers for dfaiss) only after many calls. Measured: dfaiss IVF batch-1 p50 was 1.06 ms
  // over the first 500 queries after ingest and 0.61 ms over the fourth 500, waiting
  // 15 s instead changed nothing.
  for (let i = 0; i < counts.warmup; i++) await s.search(row(nq - 1 - (i % nq)));
  for (let r = 0; r < Math.ceil(counts.warmup / 60); r++) await s.search(slice(100, r));

  const marksUs: Record<string, [number, number]> = {};
  let m0 = monoUs();
  const lat: number[] = [];
  for (let i = 0; i < counts.single; i++) {
    const q = row(i);
    const t0 = nowMs();
    await s.search(q);
    lat.push(nowMs() - t0);
  }
  marksUs.batch1 = [m0, monoUs()];

  const batched = async (size: number, reps: number, keep?: (r: number, raw: unknown) => void) => {
    let total = 0;
    for (let r = 0; r < reps; r++) {
      const q = slice(size, r);
      const t0 = nowMs();
      const raw = await s.search(q);
      total += nowMs() - t0;
      keep?.(r, raw);
    }
    return { reps, qps: (reps * size) / (total / 1000), meanMs: total / reps };
  };

  m0 = monoUs();
  const batch10 = await batched(10, counts.reps10);
  marksUs.batch10 = [m0, monoUs()];
  m0 = monoUs();
  const ids = new Int32Array(nq * K).fill(-1);
  const passes = nq / 100;
  const batch100 = await batched(100, Math.max(counts.reps100, passes), (r, raw) => {
    if (r < passes) ids.set(s.ids(raw, 100), r * 100 * K);
  });
  marksUs.batch100 = [m0, monoUs()];
  return { batch1: latencyStats(lat), batch10, batch100, ids, marksUs };
}

