/**
 * CPU accounting of a whole Flat ingest on the original's workload (issue 14): 500k x 128
 * uniform rows in 10k batches with String(row) metadata into 4 fresh servers x 1 thread,
 * per durability mode. CPU time, so valid on a loaded machine (wall time is printed but is
 * not the figure to compare):
 *
 *   node bench/dist/ingest-account.js [--modes fsync,none] [--n 500000] [--kind flat|ivf]
 *
 * `--kind ivf` is the original's IVF scenario instead (IVF1024,Flat, L2, trainNum 100k
 * per server, per-shard training): the figures then run until every vector is searchable,
 * and each server's training start and end (seconds after the first add) are printed, to
 * tell CPU spent from cores left idle.
 *
 * Prints the client's CPU (process.cpuUsage) and each server's CPU split into its main
 * thread and its other threads (libuv workers: FAISS add, WAL write + fdatasync; V8 GC
 * helpers), from /proc/<pid>/task/<tid>/schedstat, per 10k batch.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { IndexClient } from '../../dist/client/index-client.js';
import type { Durability } from '../../dist/config/index.js';
import { prng } from '../../dist/util/random.js';
import { startCluster } from './cluster.js';
import { cfgFor, waitSearchable } from './original.js';
import { threadCpuSeconds } from './proc.js';
import { monoUs, nowMs } from './stats.js';

const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const modes = (flag('--modes') ?? 'fsync,none').split(',') as Durability[];
const n = Number(flag('--n') ?? 500_000);
const nodeArgs = flag('--server-prof');
const kind = flag('--kind') ?? 'flat';
if (kind !== 'flat' && kind !== 'ivf') throw new Error(`--kind: flat or ivf, not ${kind}`);
const dim = 128;
const batch = 10_000;

/** Minor page faults (fresh memory touched) of `pid`'s [main thread, other threads] so far (stat field 10). */
function minflt(pid: number): [number, number] {
  const out: [number, number] = [0, 0];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    out[Number(tid) === pid ? 0 : 1] += Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
  }
  return out;
}
const own = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

const r = prng(14);
const base = Float32Array.from({ length: n * dim }, () => r());
const meta = Array.from({ length: n }, (_, i) => String(i));
const batches = Array.from({ length: n / batch }, (_, b) => ({ v: base.subarray(b * batch * dim, (b + 1) * batch * dim), m: meta.slice(b * batch, (b + 1) * batch) }));

/** Waits until all rows are searchable; prints when each server started and ended training. */
async function traceTraining(client: IndexClient, t0: number): Promise<void> {
  const seen = new Map<number, { training?: number; trained?: number }>();
  await waitSearchable(client, 'acct', n, (infos) => {
    const now = (nowMs() - t0) / 1000;
    infos.forEach((info, i) => {
      const e = seen.get(i) ?? {};
      if (info.state === 'TRAINING') e.training ??= now;
      if (info.state === 'TRAINED' || info.state === 'ADD') e.trained ??= now;
      seen.set(i, e);
    });
  }, 50);
  console.log(`  training per server (s after the first add): ${[...seen].map(([i, e]) => `${i}: ${e.training?.toFixed(1) ?? '?'}-${e.trained?.toFixed(1) ?? '?'}`).join(', ')}; searchable at ${((nowMs() - t0) / 1000).toFixed(1)}`);
}

for (const durability of modes) {
  const cluster = await startCluster(4, { threads: 1, ...(nodeArgs ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', nodeArgs] } : {}) });
  try {
    const client = await IndexClient.connect(cluster.discovery);
    await client.createIndex('acct', cfgFor(kind, dim, 100_000, durability));
    const s0 = cluster.servers.map((s) => threadCpuSeconds(s.pid));
    const f0 = cluster.servers.map((s) => minflt(s.pid));
    const c0 = own();
    const t0 = nowMs();
    const us0 = monoUs();
    await Promise.all(batches.map((b) => client.addIndexData('acct', b.v, b.m)));
    if (kind === 'ivf') await traceTraining(client, t0);
    const wall = (nowMs() - t0) / 1000;
    const us1 = monoUs();
    const client1 = own() - c0;
    const s1 = cluster.servers.map((s, i) => {
      const [m, o] = threadCpuSeconds(s.pid);
      return [m - s0[i]![0], o - s0[i]![1]] as const;
    });
    const faults: [number, number] = [0, 0];
    cluster.servers.forEach((s, i) => {
      const f = minflt(s.pid);
      faults[0] += f[0] - f0[i]![0];
      faults[1] += f[1] - f0[i]![1];
    });
    await client.close();
    const nb = batches.length;
    const mainS = s1.reduce((a, x) => a + x[0], 0);
    const otherS = s1.reduce((a, x) => a + x[1], 0);
    const ms = (s: number): string => ((1000 * s) / nb).toFixed(2);
    console.log(
      `${durability}: ${n} in ${wall.toFixed(2)} s wall (load ${loadavg()[0]!.toFixed(1)}); per 10k batch: client ${ms(client1)} ms CPU, ` +
        `server main thread ${ms(mainS)} ms, server other threads ${ms(otherS)} ms, total ${ms(client1 + mainS + otherS)} ms, server page faults main ${Math.round(faults[0] / nb)} / other threads ${Math.round(faults[1] / nb)} ` +
        `(whole ingest ${(client1 + mainS + otherS).toFixed(2)} CPU-s; window ${us0},${us1})`,
    );
  } finally {
    await cluster.stop({ graceful: nodeArgs !== undefined });
  }
}
