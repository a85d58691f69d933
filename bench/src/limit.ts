/**
 * The limit: the same work on in-process FAISS through our own binding (FaissIndex), in
 * the benchmark's own process, with no network, no metadata and no server.
 *
 * - "1 index": one FaissIndex, 2 OpenMP/BLAS threads (both cores).
 * - "2 shards": two FaissIndexes with 1 thread each; adds and searches are issued to both
 *   at once, so they run concurrently on two libuv worker threads, and the two top-k lists
 *   are merged (in the timing). setOmpNumThreads is process-wide, so this is "threads 1, two
 *   calls at once". This is the real floor for a 2-core machine.
 *
 * IVF: the quantizer is trained once, on trainPerShard rows sampled from the whole data
 * (2 threads), and cloned (empty) into the 2 shards; ingest = train + add for both limits.
 */
import { FaissIndex, setOmpNumThreads, type SearchResult } from '../../dist/native/index.js';
import { prng } from '../../dist/datasets/synthetic.js';
import { nowMs } from './stats.js';
import { IVF_FACTORY, IVF_NPROBE, K, batchRows, measureSearch, numBatches, type Dataset, type IndexKind, type SearchCounts, type SearchMeasurements } from './workload.js';

export interface LimitResult extends SearchMeasurements {
  side: 'limit-1' | 'limit-2';
  threads: string;
  ingest: { seconds: number; vecPerSec: number; trainSeconds: number; addSeconds: number; trainRows: number };
}

/** Rows sampled uniformly (seeded) from the base, as a shard samples its buffer. */
function sampleRows(ds: Dataset, count: number): Float32Array {
  const rand = prng(0x5eed);
  const rows = new Uint32Array(ds.n);
  for (let i = 0; i < ds.n; i++) rows[i] = i;
  const out = new Float32Array(count * ds.dim);
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(rand() * (ds.n - i));
    const t = rows[i]!;
    rows[i] = rows[j]!;
    rows[j] = t;
    out.set(ds.base.subarray(t * ds.dim, (t + 1) * ds.dim), i * ds.dim);
  }
  return out;
}

/** Merges two shards' top-K lists (l2: smaller first) into global ids. */
function merge2(a: SearchResult, b: SearchResult, mapA: Int32Array, mapB: Int32Array, nq: number): Int32Array {
  const out = new Int32Array(nq * K).fill(-1);
  for (let q = 0; q < nq; q++) {
    let i = 0;
    let j = 0;
    const base = q * K;
    for (let r = 0; r < K; r++) {
      const la = i < K ? a.labels[base + i]! : -1n;
      const lb = j < K ? b.labels[base + j]! : -1n;
      if (la < 0n && lb < 0n) break;
      if (lb < 0n || (la >= 0n && a.distances[base + i]! <= b.distances[base + j]!)) {
        out[base + r] = mapA[Number(la)]!;
        i++;
      } else {
        out[base + r] = mapB[Number(lb)]!;
        j++;
      }
    }
  }
  return out;
}

function labelsToIds(r: SearchResult): Int32Array {
  const out = new Int32Array(r.labels.length);
  for (let i = 0; i < out.length; i++) out[i] = Number(r.labels[i]);
  return out;
}

export async function runLimits(ds: Dataset, kind: IndexKind, counts: SearchCounts, log: (msg: string) => void): Promise<LimitResult[]> {
  const nb = numBatches(ds);
  const factory = kind === 'flat' ? 'Flat' : IVF_FACTORY;

  // Training (IVF only): once, 2 threads, then cloned empty into the shards.
  setOmpNumThreads(2);
  let trainSeconds = 0;
  let trainRows = 0;
  const one = FaissIndex.fromFactory(ds.dim, factory, 'l2');
  const shards: FaissIndex[] = [];
  if (kind === 'ivf') {
    trainRows = ds.trainPerShard;
    const t0 = nowMs();
    const sample = sampleRows(ds, trainRows);
    await one.train(sample);
    trainSeconds = (nowMs() - t0) / 1000;
    log(`limit ${kind}: trained ${IVF_FACTORY} on ${trainRows} rows in ${trainSeconds.toFixed(2)} s`);
    shards.push(await one.clone(), await one.clone());
    for (const ix of [one, ...shards]) await ix.setParameter('nprobe', IVF_NPROBE);
  } else {
    shards.push(FaissIndex.fromFactory(ds.dim, factory, 'l2'), FaissIndex.fromFactory(ds.dim, factory, 'l2'));
  }

  // ---- 1 index, 2 threads
  let t0 = nowMs();
  for (let b = 0; b < nb; b++) await one.add(batchRows(ds, b).vectors);
  const add1 = (nowMs() - t0) / 1000;
  log(`limit ${kind} 1 index: added ${ds.n} in ${add1.toFixed(2)} s`);
  const m1 = await measureSearch(
    ds,
    { search: (q) => one.search(q, K), ids: (raw) => labelsToIds(raw as SearchResult) },
    counts,
  );
  // Ingest = the one training + this side's adds.
  const result = (side: LimitResult['side'], threads: string, addSeconds: number, m: typeof m1): LimitResult => ({
    side,
    threads,
    ingest: { seconds: trainSeconds + addSeconds, vecPerSec: ds.n / (trainSeconds + addSeconds), trainSeconds, addSeconds, trainRows },
    ...m,
  });
  const r1 = result('limit-1', '1 index x 2 threads', add1, m1);

  // ---- 2 shards, 1 thread each, calls issued concurrently
  setOmpNumThreads(1);
  const maps = [new Int32Array(ds.n / 2), new Int32Array(ds.n / 2)];
  const fill = [0, 0];
  for (let b = 0; b < nb; b++) {
    const { first, rows } = batchRows(ds, b);
    const s = b % 2;
    for (let i = 0; i < rows; i++) maps[s]![fill[s]!++] = first + i;
  }
  t0 = nowMs();
  await Promise.all(
    [0, 1].map(async (s) => {
      for (let b = s; b < nb; b += 2) await shards[s]!.add(batchRows(ds, b).vectors);
    }),
  );
  const add2 = (nowMs() - t0) / 1000;
  log(`limit ${kind} 2 shards: added ${ds.n} in ${add2.toFixed(2)} s`);
  const [s0, s1] = shards as [FaissIndex, FaissIndex];
  const m2 = await measureSearch(
    ds,
    {
      search: async (q) => {
        const [a, b] = await Promise.all([s0.search(q, K), s1.search(q, K)]);
        return merge2(a, b, maps[0]!, maps[1]!, a.n);
      },
      ids: (raw) => raw as Int32Array,
    },
    counts,
  );
  const r2 = result('limit-2', '2 shards x 1 thread, concurrent', add2, m2);
  setOmpNumThreads(2);
  return [r1, r2];
}
