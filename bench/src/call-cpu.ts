/**
 * Per-call cost of a batch-1 IVF search (issue 14, item 5): 4 fresh servers x 1 thread, an
 * IVF1024,Flat index (nprobe 16, L2) over 200,000 uniform 128-d vectors with String(row)
 * metadata, then sequential single-query searches. Reports server CPU per call (all 4
 * servers, from schedstat), client CPU per call, and p50/p99 latency:
 *
 *   node bench/dist/call-cpu.js [--calls N] [--server-prof DIR]
 *
 * `window` in the output cuts the server profiles to the measured calls (bench/dist/cpuprofile.js --window).
 *
 * CPU per call holds under load; latency does not (write the load average next to it).
 */
import { loadavg } from 'node:os';
import { IndexClient } from '../../dist/client/index-client.js';
import { prng } from '../../dist/util/random.js';
import { startCluster } from './cluster.js';
import { schedCpuSeconds } from './proc.js';
import { latencyStats, monoUs, nowMs, sleep } from './stats.js';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const calls = Number(arg('--calls') ?? 3000);
const prof = arg('--server-prof');
const dim = 128;
const n = 200_000;
const r = prng(5);
const base = Float32Array.from({ length: n * dim }, () => r());
const queries = Float32Array.from({ length: 1000 * dim }, () => r());

const cluster = await startCluster(4, { threads: 1, ...(prof ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', prof] } : {}) });
const client = await IndexClient.connect(cluster.discovery);
try {
  await client.createIndex('calls', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 1024, nprobe: 16, trainNum: 50_000 });
  for (let b = 0; b < n / 10_000; b++) {
    await client.addIndexData('calls', base.subarray(b * 10_000 * dim, (b + 1) * 10_000 * dim), Array.from({ length: 10_000 }, (_, i) => String(b * 10_000 + i)));
  }
  for (;;) {
    const st = await client.status();
    const infos = st.map((s) => (s.indexes as Record<string, { state: string; ntotal: number }>).calls!);
    if (infos.every((i) => i.state === 'TRAINED') && infos.reduce((a, i) => a + i.ntotal, 0) === n) break;
    await sleep(50);
  }
  await sleep(2000); // post-training snapshot
  const q = (i: number): Float32Array => queries.subarray((i % 1000) * dim, ((i % 1000) + 1) * dim);
  for (let i = 0; i < 1500; i++) await client.search('calls', q(i), 10);
  const cpu = (): number => cluster.servers.reduce((a, s) => a + schedCpuSeconds(s.pid), 0);
  const own = (): number => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const s0 = cpu();
  const c0 = own();
  const m0 = monoUs();
  const lat: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t = nowMs();
    await client.search('calls', q(i), 10);
    lat.push(nowMs() - t);
  }
  const window = `${m0},${monoUs()}`;
  const st = latencyStats(lat);
  const serverMs = ((cpu() - s0) * 1000) / calls;
  const clientMs = ((own() - c0) * 1000) / calls;
  console.log(
    JSON.stringify({ calls, serverCpuMsPerCall: +serverMs.toFixed(4), perServerMs: +(serverMs / 4).toFixed(4), clientCpuMsPerCall: +clientMs.toFixed(4), p50: +st.p50.toFixed(3), p99: +st.p99.toFixed(3), load: loadavg().map((v) => +v.toFixed(2)), window }),
  );
} finally {
  await client.close();
  await cluster.stop({ graceful: prof !== undefined });
}
