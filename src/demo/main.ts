/**
 * The main job (`npm run demo`): index real data with FAISS through dfaiss's binding and
 * print search results, recall against exact search, and timings.
 * Data: Debian's Fashion-MNIST (60k x 784) when installed, else synthetic structured vectors.
 */
import { FaissIndex, setNumThreads } from '../native/index.js';
import { fashionMnistAvailable, loadFashionMnist } from '../datasets/fashion-mnist.js';
import { SyntheticDataset } from '../datasets/synthetic.js';
import { exactSearch, recallAtK } from '../datasets/exact.js';

const K = 10;
const NQ = 200;

function ms(t0: number): string {
  return `${(performance.now() - t0).toFixed(1)} ms`;
}

async function main(): Promise<void> {
  let base: Float32Array;
  let queries: Float32Array;
  let dim: number;
  let source: string;
  if (fashionMnistAvailable()) {
    const fm = loadFashionMnist({ testLimit: NQ });
    ({ dim } = fm);
    base = fm.train;
    queries = fm.test;
    source = 'Fashion-MNIST (Debian dataset-fashion-mnist)';
  } else {
    dim = 128;
    const data = new SyntheticDataset({ dim, seed: 42 });
    base = data.base(100_000);
    queries = data.queries(NQ);
    source = 'synthetic clustered vectors (install dataset-fashion-mnist for real data)';
  }
  const n = base.length / dim;
  setNumThreads(2);
  console.log(`data: ${source}: ${n} x ${dim}, ${NQ} queries, top-${K}, L2`);

  let t0 = performance.now();
  const truth = exactSearch(base, queries.subarray(0, 20 * dim), dim, K, 'l2');
  console.log(`exact search in TypeScript (20 queries, for reference): ${ms(t0)}`);

  const flat = FaissIndex.fromFactory(dim, 'Flat', 'l2');
  t0 = performance.now();
  await flat.add(base);
  console.log(`Flat: add ${n} vectors ${ms(t0)}`);
  t0 = performance.now();
  const exact = await flat.search(queries, K);
  console.log(`Flat: search ${NQ} queries ${ms(t0)}; recall@${K} vs TypeScript exact (20 q): ${recallAtK(truth.labels, exact.labels.subarray(0, 20 * K), 20, K).toFixed(3)}`);

  const ivf = FaissIndex.fromFactory(dim, 'IVF256,Flat', 'l2');
  t0 = performance.now();
  await ivf.train(base.subarray(0, Math.min(n, 20_000) * dim));
  console.log(`IVF256,Flat: train on ${Math.min(n, 20_000)} vectors ${ms(t0)}`);
  t0 = performance.now();
  await ivf.add(base);
  console.log(`IVF256,Flat: add ${ms(t0)}`);
  for (const nprobe of [1, 8, 32]) {
    await ivf.setParameter('nprobe', nprobe);
    t0 = performance.now();
    const r = await ivf.search(queries, K);
    const el = performance.now() - t0;
    console.log(`IVF256,Flat nprobe=${String(nprobe).padEnd(2)}: search ${NQ} queries ${el.toFixed(1)} ms (${((NQ / el) * 1000).toFixed(0)} QPS), recall@${K} ${recallAtK(exact.labels, r.labels, NQ, K).toFixed(3)}`);
  }

  console.log(`\nfirst query, top-5 (id: squared L2):`);
  const r = await ivf.search(queries.subarray(0, dim), 5);
  for (let i = 0; i < 5; i++) console.log(`  ${r.labels[i]}: ${r.distances[i]!.toFixed(3)}`);
}

await main();
