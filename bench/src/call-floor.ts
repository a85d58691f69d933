/**
 * In-process floor of one batch-1 IVF search (issue 14 item 5): one FaissIndex, IVF1024,Flat,
 * L2, nprobe 16, 1 OpenMP thread, uniform 128-d rows (the call-cpu.js / --original shard sizes),
 * no RPC. CPU per call (process.cpuUsage, all threads) for the raw native call on the event
 * loop (searchSync), FaissIndex.searchInline, and FaissIndex.search (the thread-pool hop):
 *
 *   node bench/dist/call-floor.js [--rows 50000,125000] [--calls 5000]
 *
 * CPU per call holds under load; wall per call does not (the load average is printed).
 */
import { loadavg } from 'node:os';
import { FaissIndex, setOmpNumThreads } from '../../dist/native/index.js';
import { prng } from '../../dist/util/random.js';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const sizes = arg('--rows', '50000,125000').split(',').map(Number);
const calls = Number(arg('--calls', '5000'));
const dim = 128;
const k = 10;
setOmpNumThreads(1);
const r = prng(5);
const queries = Float32Array.from({ length: 1000 * dim }, () => r());
const q = (i: number): Float32Array => queries.subarray((i % 1000) * dim, ((i % 1000) + 1) * dim);
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function measure(name: string, one: (i: number) => unknown): Promise<Record<string, number | string>> {
  for (let i = 0; i < 500; i++) await one(i); // warm
  const c0 = cpuMs();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) await one(i);
  const wall = (performance.now() - t0) / calls;
  return { path: name, cpuMsPerCall: +((cpuMs() - c0) / calls).toFixed(4), wallMsPerCall: +wall.toFixed(4) };
}

for (const rows of sizes) {
  const index = FaissIndex.fromFactory(dim, 'IVF1024,Flat', 'l2');
  const base = Float32Array.from({ length: rows * dim }, () => r());
  await index.train(base.subarray(0, Math.min(rows, 100_000) * dim));
  await index.add(base);
  await index.setParameter('nprobe', 16);
  if (index.nprobe !== 16) throw new Error('nprobe not set');
  const raw = (index as unknown as { raw: { searchSync(x: Float32Array, n: number, k: number, d: Float32Array, l: BigInt64Array): boolean } }).raw;
  const dist = new Float32Array(k);
  const labels = new BigInt64Array(k);
  const out = [
    await measure('native searchSync (FAISS alone)', (i) => raw.searchSync(q(i), 1, k, dist, labels)),
    await measure('FaissIndex.searchInline', (i) => {
      if (index.searchInline(q(i), k) === null) throw new Error('searchInline did not search');
    }),
    await measure('FaissIndex.search (thread pool)', (i) => index.search(q(i), k)),
  ];
  for (const o of out) console.log(JSON.stringify({ rows, ...o, load: loadavg().map((v) => +v.toFixed(2)) }));
}
