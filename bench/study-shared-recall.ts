// Study (issue 15, item 1): is shared training's recall gap to per-shard training noise or
// systematic? In-process, through the shard's own training functions, the cluster's layout
// (3 shards, batches of 1000 placed round-robin, top-k merged by distance):
//   node --import tsx bench/study-shared-recall.ts [N] [queries] [seeds,...] [types,...]
import { parseIndexCfg, type IndexCfg } from '../src/config/index.js';
import { SyntheticDataset } from '../src/datasets/synthetic.js';
import { exactSearch, recallAtK } from '../src/datasets/exact.js';
import { setOmpNumThreads, type FaissIndex } from '../src/native/index.js';
import { buildFromTrained, trainOwnIndex, trainSharedIndex } from '../src/shard/shard-training.js';
import { SHARED_TRAINING_TYPES } from '../test/helpers/trainable-types.js';

const dim = 32;
const K = 10;
const SHARDS = 3;
const N = Number(process.argv[2] ?? 9000);
const NQ = Number(process.argv[3] ?? 1000);
const SEEDS = (process.argv[4] ?? '15,1,2,3,4').split(',').map(Number);
const ONLY = process.argv[5]?.split(',');

const TYPES: Array<[string, Partial<IndexCfg>, Record<string, number>]> = [
  ...SHARED_TRAINING_TYPES.map(([, short, cfg, params]): [string, Partial<IndexCfg>, Record<string, number>] => [short, cfg, params]),
  // knnlm with twice the code size: is its gap the 8-byte codes' noise?
  ['knnlm16', { indexBuilderType: 'knnlm', centroids: 32, extra: { codeSize: 16, bitsPerVector: 6 } }, { nprobe: 8 }],
];

function shardRows(base: Float32Array, s: number): Float32Array {
  const ids: number[] = [];
  for (let b = s; b * 1000 < N; b += SHARDS) ids.push(b);
  const parts = ids.map((b) => base.subarray(b * 1000 * dim, Math.min(N, (b + 1) * 1000) * dim));
  const rows = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    rows.set(p, o);
    o += p.length;
  }
  return rows;
}

function globalId(s: number, local: number): number {
  return (Math.floor(local / 1000) * SHARDS + s) * 1000 + (local % 1000);
}

async function recall(indexes: FaissIndex[], queries: Float32Array, truth: BigInt64Array, params: Record<string, number>): Promise<number> {
  for (const ix of indexes) for (const [k, v] of Object.entries(params)) await ix.setParameter(k, v);
  const rs = await Promise.all(indexes.map((ix) => ix.search(queries, K)));
  const found = new Int32Array(NQ * K);
  for (let q = 0; q < NQ; q++) {
    const hits: Array<[number, number]> = [];
    rs.forEach((r, s) => {
      for (let i = 0; i < K; i++) if (r.labels[q * K + i]! >= 0n) hits.push([r.distances[q * K + i]!, globalId(s, Number(r.labels[q * K + i]))]);
    });
    hits.sort((a, b) => a[0] - b[0]);
    for (let i = 0; i < K; i++) found[q * K + i] = hits[i]?.[1] ?? -1;
  }
  return recallAtK(new Int32Array(Array.from(truth, Number)), found, NQ, K);
}

setOmpNumThreads(2);
console.log(`N ${N}, queries ${NQ}, seeds ${SEEDS.join(',')}`);
for (const [name, partial, params] of TYPES) {
  if (ONLY && !ONLY.includes(name)) continue;
  const gaps: number[] = [];
  const line: string[] = [];
  for (const seed of SEEDS) {
    const data = new SyntheticDataset({ dim, seed });
    const base = data.base(N);
    const queries = data.queries(NQ);
    const truth = exactSearch(base, queries, dim, K, 'l2').labels;
    const shards = Array.from({ length: SHARDS }, (_, s) => shardRows(base, s));
    const cfgS = parseIndexCfg({ ...partial, dim, metric: 'l2', trainNum: N });
    const cfgP = parseIndexCfg({ ...partial, dim, metric: 'l2', trainNum: N / SHARDS });
    // shared: one training on every vector (the cluster's sample: each shard's rows in turn), installed everywhere
    const { index: trainer, state } = await trainSharedIndex(cfgS, Float32Array.from(shards.flatMap((r) => Array.from(r))), new Map(), {});
    const shared = [trainer, ...(await Promise.all(shards.slice(1).map(() => buildFromTrained(cfgS, state, new Map()))))];
    for (let s = 0; s < SHARDS; s++) await shared[s]!.add(shards[s]!);
    const per = await Promise.all(shards.map((rows) => trainOwnIndex(cfgP, rows.slice(), rows.length / dim, rows.length / dim, new Map())));
    for (let s = 0; s < SHARDS; s++) await per[s]!.add(shards[s]!);
    const rs = await recall(shared, queries, truth, params);
    const rp = await recall(per, queries, truth, params);
    gaps.push(rs - rp);
    line.push(`seed ${seed}: ${rs.toFixed(3)}/${rp.toFixed(3)} (${(rs - rp >= 0 ? '+' : '') + (rs - rp).toFixed(3)})`);
  }
  const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
  const sd = Math.sqrt(gaps.reduce((a, g) => a + (g - mean) ** 2, 0) / Math.max(1, gaps.length - 1));
  console.log(`${name}: shared-per gap mean ${mean >= 0 ? '+' : ''}${mean.toFixed(4)} sd ${sd.toFixed(4)} | ${line.join('; ')}`);
}
