/**
 * `npm run bench -- --original`: the Python original's own workload (issue 14), like for like.
 *
 * - data: uniform [0, 1) floats (seeded), 500,000 x 128 base, 1000 queries from an independent
 *   stream; batches of 10,000 rows; metadata = the row number as a string (`String(row)`);
 * - 4 fresh `dfaiss server` processes x 1 FAISS thread, one IndexClient, top-10; Flat by inner
 *   product (the original's flat index is always IndexFlatIP), IVF by L2;
 * - Flat: `indexBuilderType: 'flat'`; IVF: `ivf_simple`, 1024 centroids, nprobe 16,
 *   trainNum 100,000 with `trainMode: 'per-shard'` (each server trains its own k-means on its
 *   first 100k vectors, as the original does);
 * - dfaiss at its default durability (`fsync`) and at `none` (the original has no log),
 *   alternating (fsync, none, then none, fsync, ...) over --reps rounds; medians reported;
 * - measured per run: ingest vec/s (first add until every shard is TRAINED and ntotal == n),
 *   batch-1 p50/p99 and batch-100 QPS (the shared search workload of workload.ts), server CPU
 *   per batch-1 call (from /proc/<pid>/schedstat, ns), peak RSS per server, and disk use per
 *   input byte after the ingest and after a saveIndex.
 *
 *   npm run bench -- --original [--quick] [--reps N] [--kinds flat,ivf] [--modes fsync,none]
 *                               [--server-prof DIR] [--out DIR] [--name N] [--dump-data DIR]
 *                               [--counts WARMUP,SINGLE,REPS10,REPS100]
 *
 * `--dump-data DIR` writes the run's data (honouring --quick) and exits without a cluster, so an
 * outside driver reads the very same vectors: base.f32, queries.f32 (row-major little-endian
 * float32), truth-flat.i32 and truth-ivf.i32 (exact top-10 row ids by inner product / by L2,
 * little-endian int32, nq x 10), and header.json (sizes, seeds, file names, search counts).
 *
 * The original is not installed by this project (no PyPI or GitHub here, and none of its code
 * may be committed): bench/results/original-side-by-side.md says how it was run beside this
 * bench on the same --dump-data files. ORIGINAL below are issue 14's figures, from a faster
 * machine, quoted as measured elsewhere.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IndexClient } from '../../dist/client/index-client.js';
import type { Durability, IndexCfg } from '../../dist/config/index.js';
import { recallAtK } from '../../dist/datasets/exact.js';
import { FaissIndex, setOmpNumThreads } from '../../dist/native/index.js';
import { prng } from '../../dist/util/random.js';
import { machineBusySeconds, startCluster, type BenchCluster } from './cluster.js';
import { diskBytes, schedCpuSeconds } from './proc.js';
import { flagValue, fmt, monoUs, nowMs, sleep, type LatencyStats } from './stats.js';
import { K, SERVERS, clientSearcher, measureSearch, type Dataset, type SearchCounts } from './workload.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const MiB = 1024 * 1024;
/** PRNG seeds of the base and query vectors (also written to --dump-data's header). */
const SEEDS = { base: 14, queries: 1414 } as const;

/** The original's figures on this workload as issue 14 quotes them (another, ~3x faster machine). */
export const ORIGINAL = {
  flat: { ingest: 446_000, p50: 20.4, p99: 50.0, qps100: 899, rssMiB: '270-280' },
  ivf: { ingest: 56_200, p50: 1.49, p99: 6.8, qps100: 2264, rssMiB: '270-280' },
} as const;

type Kind = 'flat' | 'ivf';

interface Sizes {
  n: number;
  nq: number;
  batch: number;
  trainNum: number;
  reps: number;
  counts: SearchCounts;
}

const FULL: Sizes = { n: 500_000, nq: 1000, batch: 10_000, trainNum: 100_000, reps: 3, counts: { warmup: 600, single: 500, reps10: 30, reps100: 30, ingestReps: 1 } };
const QUICK: Sizes = { n: 100_000, nq: 500, batch: 10_000, trainNum: 20_000, reps: 1, counts: { warmup: 300, single: 300, reps10: 10, reps100: 10, ingestReps: 1 } };

export interface OriginalRun {
  kind: Kind;
  durability: Durability;
  round: number;
  ingestVecPerSec: number;
  ingestSeconds: number;
  sendSeconds: number;
  /** Until every shard had trained (IVF: its k-means done; Flat: at once). */
  trainedSeconds: number;
  batch1: LatencyStats;
  batch10Qps: number;
  batch100Qps: number;
  recall: number;
  /** Server CPU (all 4 servers) per batch-1 search call, ms; and per batch-100 call. */
  serverCpuMsPerB1: number;
  serverCpuMsPerB100: number;
  /** Client (this process) CPU per batch-1 call, ms. */
  clientCpuMsPerB1: number;
  peakRssMiB: number[];
  /** Bytes on disk under the servers' save folder per input byte (vectors + metadata as sent), after ingest and after saveIndex. */
  diskPerInputAfterIngest: number;
  diskPerInputAfterSave: number;
  /** CPU seconds other processes used on the machine during the run. */
  foreignCpuSeconds: number;
  load: number[];
  /** Phase boundaries, CLOCK_MONOTONIC µs (cut profiles with cpuprofile.js --window a,b). */
  marksUs: Record<string, [number, number]>;
}

function uniform(rows: number, dim: number, seed: number): Float32Array {
  const r = prng(seed);
  const out = new Float32Array(rows * dim);
  for (let i = 0; i < out.length; i++) out[i] = r();
  return out;
}

/**
 * Flat by inner product: the original's flat index is always IndexFlatIP. IVF by L2: on
 * uniform data an inner-product IVF reaches recall@10 ~0.14, which would say nothing.
 */
export function cfgFor(kind: Kind, dim: number, trainNum: number, durability: Durability): Partial<IndexCfg> {
  return kind === 'flat'
    ? { indexBuilderType: 'flat', dim, metric: 'dot', durability }
    : { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 1024, nprobe: 16, trainNum, trainMode: 'per-shard', durability };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const serversCpu = (c: BenchCluster): number => c.servers.reduce((a, s) => a + schedCpuSeconds(s.pid), 0);
const ownCpu = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/**
 * Polls until every shard is TRAINED and holds its share; returns when every shard had
 * trained (ms, nowMs clock). `onPoll` sees each poll's per-server states; polls every `pollMs`.
 */
export async function waitSearchable(client: IndexClient, id: string, n: number, onPoll?: (infos: Array<{ state: string; ntotal: number }>) => void, pollMs = 10): Promise<number> {
  let trainedAt = NaN;
  for (;;) {
    const st = await client.status();
    const infos = st.map((s) => (s.indexes as Record<string, { state: string; ntotal: number }>)[id]!);
    onPoll?.(infos);
    if (Number.isNaN(trainedAt) && infos.every((i) => i.state === 'TRAINED' || i.state === 'ADD')) trainedAt = nowMs();
    if (infos.every((i) => i.state === 'TRAINED') && infos.reduce((a, i) => a + i.ntotal, 0) === n) return trainedAt;
    await sleep(pollMs);
  }
}

/** Waits until the servers use less than 1% of a core for two 500 ms windows (background snapshot, trims). */
async function settle(cluster: BenchCluster, maxSeconds: number): Promise<void> {
  const t0 = nowMs();
  let prev = serversCpu(cluster);
  let quiet = 0;
  while (quiet < 2 && nowMs() - t0 < maxSeconds * 1000) {
    await sleep(500);
    const c = serversCpu(cluster);
    quiet = c - prev < 0.005 ? quiet + 1 : 0;
    prev = c;
  }
}

async function runOnce(ds: Dataset & { meta: string[] }, truth: Int32Array, kind: Kind, durability: Durability, round: number, sizes: Sizes, nodeArgs: string[] | undefined, log: (m: string) => void): Promise<OriginalRun> {
  const id = `orig-${kind}`;
  const inputBytes = ds.base.byteLength + ds.meta.reduce((a, m) => a + Buffer.byteLength(m) + 1, 0);
  const batches = Array.from({ length: ds.n / sizes.batch }, (_, b) => ({
    vectors: ds.base.subarray(b * sizes.batch * ds.dim, (b + 1) * sizes.batch * ds.dim),
    meta: ds.meta.slice(b * sizes.batch, (b + 1) * sizes.batch),
  }));
  const busy0 = machineBusySeconds();
  const own0 = ownCpu();
  const cluster = await startCluster(SERVERS, { threads: 1, ...(nodeArgs ? { nodeArgs } : {}) });
  const cpu0 = serversCpu(cluster);
  try {
    const client = await IndexClient.connect(cluster.discovery);
    try {
      await client.createIndex(id, cfgFor(kind, ds.dim, sizes.trainNum, durability));
      // Peak RSS is the kernel's VmHWM: no /proc sampling timer in this process meanwhile.
      const ingestUs0 = monoUs();
      const t0 = nowMs();
      await Promise.all(batches.map((b) => client.addIndexData(id, b.vectors, b.meta)));
      const sendSeconds = (nowMs() - t0) / 1000;
      const trainedSeconds = ((await waitSearchable(client, id, ds.n)) - t0) / 1000;
      const ingestSeconds = (nowMs() - t0) / 1000;
      const ingestUs: [number, number] = [ingestUs0, monoUs()];
      await settle(cluster, 120);
      const diskAfterIngest = diskBytes(cluster.dir);
      log(`${kind} ${durability} round ${round}: ${ds.n} in ${ingestSeconds.toFixed(2)} s (${Math.round(ds.n / ingestSeconds)} vec/s; sent after ${sendSeconds.toFixed(2)} s, trained after ${trainedSeconds.toFixed(2)} s)`);

      // Server and client CPU per call are read around each phase (schedstat: ns resolution).
      const phaseCpu: Record<string, { server: number; client: number }> = {};
      let mark = { server: 0, client: 0 };
      const m = await measureSearch(
        ds,
        clientSearcher((q) => client.search(id, q, K)),
        sizes.counts,
        {
          onPhase: (phase, edge) => {
            const now = { server: serversCpu(cluster), client: ownCpu() };
            if (edge === 'start') mark = now;
            else phaseCpu[phase] = { server: now.server - mark.server, client: now.client - mark.client };
          },
        },
      );
      await client.saveIndex(id);
      await settle(cluster, 60);
      const diskAfterSave = diskBytes(cluster.dir);
      const mem = cluster.memory();
      const b100Calls = Math.max(sizes.counts.reps100, ds.nq / 100);
      const run: OriginalRun = {
        kind,
        durability,
        round,
        ingestVecPerSec: ds.n / ingestSeconds,
        ingestSeconds,
        sendSeconds,
        trainedSeconds,
        batch1: m.batch1,
        batch10Qps: m.batch10.qps,
        batch100Qps: m.batch100.qps,
        recall: recallAtK(truth, m.ids, ds.nq, K),
        serverCpuMsPerB1: (1000 * phaseCpu.batch1!.server) / sizes.counts.single,
        serverCpuMsPerB100: (1000 * phaseCpu.batch100!.server) / b100Calls,
        clientCpuMsPerB1: (1000 * phaseCpu.batch1!.client) / sizes.counts.single,
        peakRssMiB: mem.map((x) => x.peakRssBytes / MiB),
        diskPerInputAfterIngest: diskAfterIngest / inputBytes,
        diskPerInputAfterSave: diskAfterSave / inputBytes,
        foreignCpuSeconds: 0,
        load: loadavg(),
        marksUs: { ingest: ingestUs, ...m.marksUs },
      };
      const ours = serversCpu(cluster) - cpu0 + ownCpu() - own0;
      run.foreignCpuSeconds = Math.max(0, machineBusySeconds() - busy0 - ours);
      log(
        `  b1 p50 ${run.batch1.p50.toFixed(3)} p99 ${run.batch1.p99.toFixed(3)} ms, b100 ${Math.round(run.batch100Qps)} QPS, recall ${run.recall.toFixed(3)}, ` +
          `server CPU/b1 call ${run.serverCpuMsPerB1.toFixed(3)} ms, disk/input ${run.diskPerInputAfterIngest.toFixed(2)} -> ${run.diskPerInputAfterSave.toFixed(2)}, ` +
          `peak RSS ${run.peakRssMiB.map((v) => v.toFixed(0)).join('/')} MiB, other processes ${run.foreignCpuSeconds.toFixed(1)} CPU-s, load ${run.load.map((v) => v.toFixed(2)).join(' ')}`,
      );
      return run;
    } finally {
      await client.close();
    }
  } finally {
    await cluster.stop({ graceful: nodeArgs !== undefined });
  }
}

/**
 * The FAISS work of the IVF ingest alone, in this process: 4 indexes x 1 thread (4 libuv
 * workers on the 2 cores), each trained on its shard's first trainNum rows (the batches
 * round-robin hands it) and then given all of its share; wall seconds and CPU seconds.
 * No RPC, log or metadata: what per-server training costs at least on this machine.
 */
async function ivfFloor(ds: Dataset, sizes: Sizes): Promise<{ seconds: number; cpuSeconds: number; vecPerSec: number }> {
  setOmpNumThreads(1);
  const perShard = Array.from({ length: SERVERS }, (_, s) => {
    const rows: Float32Array[] = [];
    for (let b = s; b < ds.n / sizes.batch; b += SERVERS) rows.push(ds.base.subarray(b * sizes.batch * ds.dim, (b + 1) * sizes.batch * ds.dim));
    const all = new Float32Array(rows.reduce((a, r) => a + r.length, 0));
    let at = 0;
    for (const r of rows) (all.set(r, at), (at += r.length));
    return all;
  });
  const cpu0 = ownCpu();
  const t0 = nowMs();
  await Promise.all(
    perShard.map(async (x) => {
      const index = FaissIndex.fromFactory(ds.dim, 'IVF1024,Flat', 'l2');
      await index.train(x.subarray(0, sizes.trainNum * ds.dim));
      await index.add(x);
    }),
  );
  const seconds = (nowMs() - t0) / 1000;
  return { seconds, cpuSeconds: ownCpu() - cpu0, vecPerSec: ds.n / seconds };
}

interface Opts {
  quick: boolean;
  reps: number;
  kinds: Kind[];
  modes: Durability[];
  serverProf: string | null;
  out: string;
  name: string;
  dumpData: string | null;
  /** Search counts instead of the scenario's (warm-up, batch-1 calls, batch-10 and batch-100 reps): `--counts 10000,3000,30,30` measures servers whose JIT has settled. */
  counts: Omit<SearchCounts, 'ingestReps'> | null;
}

function parse(argv: string[]): Opts {
  const o: Opts = { quick: false, reps: 0, kinds: ['flat', 'ivf'], modes: ['fsync', 'none'], serverProf: null, out: join(REPO, 'bench', 'results'), name: '', dumpData: null, counts: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => flagValue(argv, i++);
    if (a === '--quick') o.quick = true;
    else if (a === '--reps') o.reps = Number(next());
    else if (a === '--kinds') o.kinds = next().split(',') as Kind[];
    else if (a === '--modes') o.modes = next().split(',') as Durability[];
    else if (a === '--server-prof') o.serverProf = next();
    else if (a === '--out') o.out = next();
    else if (a === '--name') o.name = next();
    else if (a === '--dump-data') o.dumpData = next();
    else if (a === '--counts') {
      const c = next().split(',').map(Number);
      if (c.length !== 4 || !c.every((x) => Number.isSafeInteger(x) && x >= 0)) throw new Error('--counts: WARMUP,SINGLE,REPS10,REPS100 (non-negative integers)');
      o.counts = { warmup: c[0]!, single: c[1]!, reps10: c[2]!, reps100: c[3]! };
    }
    else throw new Error(`unknown argument ${a} for --original (see src/bench/original.ts)`);
  }
  for (const k of o.kinds) if (k !== 'flat' && k !== 'ivf') throw new Error(`--kinds: unknown index kind ${k}`);
  for (const m of o.modes) if (m !== 'fsync' && m !== 'os' && m !== 'none') throw new Error(`--modes: unknown durability ${m}`);
  o.name ||= o.quick ? 'original-quick' : 'original';
  return o;
}

export async function runOriginalBench(argv: string[]): Promise<void> {
  const opts = parse(argv);
  const scenario = opts.quick ? QUICK : FULL;
  const sizes: Sizes = opts.counts ? { ...scenario, counts: { ...scenario.counts, ...opts.counts } } : scenario;
  const reps = opts.reps || sizes.reps;
  const log = (msg: string): void => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
  const dim = 128;
  const base = uniform(sizes.n, dim, SEEDS.base);
  const queries = uniform(sizes.nq, dim, SEEDS.queries);
  const ds: Dataset & { meta: string[] } = {
    name: 'synthetic', // the search workload only reads dim, nq and queries
    description: `uniform [0, 1), seed 14: ${sizes.n} x ${dim}, ${sizes.nq} queries (seed 1414)`,
    dim,
    n: sizes.n,
    base,
    batch: sizes.batch,
    nq: sizes.nq,
    queries,
    trainPerShard: sizes.trainNum,
    meta: Array.from({ length: sizes.n }, (_, i) => String(i)),
  };
  // Exact top-k per metric (Flat searches by inner product, IVF by L2: see cfgFor).
  setOmpNumThreads(2);
  const truthFor = async (metric: 'dot' | 'l2'): Promise<Int32Array> => {
    const exact = FaissIndex.fromFactory(dim, 'Flat', metric);
    await exact.add(base);
    return Int32Array.from((await exact.search(queries, K)).labels, (v) => Number(v));
  };
  const truth = { flat: await truthFor('dot'), ivf: await truthFor('l2') };
  if (opts.dumpData !== null) {
    dumpData(opts.dumpData, sizes, dim, base, queries, truth);
    log(`wrote ${sizes.n} x ${dim} base, ${sizes.nq} queries and exact top-${K} to ${opts.dumpData}`);
    return;
  }
  const nodeArgs = opts.serverProf ? ['--cpu-prof', '--cpu-prof-dir', opts.serverProf] : undefined;
  if (opts.serverProf) mkdirSync(opts.serverProf, { recursive: true });

  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg();
  log(`${opts.name}: ${sizes.n} x ${dim} uniform, ${reps} round(s), kinds ${opts.kinds.join(',')}, durability ${opts.modes.join(',')}; load ${loadAtStart.map((v) => v.toFixed(2)).join(' ')}`);
  const runs: OriginalRun[] = [];
  const floors: Array<{ seconds: number; cpuSeconds: number; vecPerSec: number }> = [];
  for (let r = 0; r < reps; r++) {
    if (opts.kinds.includes('ivf')) {
      floors.push(await ivfFloor(ds, sizes));
      const f = floors[floors.length - 1]!;
      log(`in-process IVF floor (4 x 1 thread, train ${sizes.trainNum} + add each): ${f.seconds.toFixed(2)} s wall, ${f.cpuSeconds.toFixed(2)} CPU-s, ${Math.round(f.vecPerSec)} vec/s`);
    }
    for (const kind of opts.kinds) {
      // Alternate the order of the durability modes from round to round (A B, B A, ...).
      const modes = r % 2 === 0 ? opts.modes : [...opts.modes].reverse();
      for (const mode of modes) runs.push(await runOnce(ds, truth[kind], kind, mode, r + 1, sizes, nodeArgs, log));
    }
  }
  const rec = { name: opts.name, startedAt, argv, sizes, machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '?', node: process.version }, loadAtStart, loadAtEnd: loadavg(), runs, ivfFloors: floors };
  mkdirSync(opts.out, { recursive: true });
  writeFileSync(join(opts.out, `${opts.name}.json`), `${JSON.stringify(rec, null, 2)}\n`);
  const md = originalMarkdown(rec, opts);
  writeFileSync(join(opts.out, `${opts.name}.md`), md);
  console.log(md);
}

/** Raw little-endian files (x86/ARM hosts are little-endian; checked) plus a JSON header describing them. */
function dumpData(dir: string, sizes: Sizes, dim: number, base: Float32Array, queries: Float32Array, truth: { flat: Int32Array; ivf: Int32Array }): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('--dump-data: this host is not little-endian');
  mkdirSync(dir, { recursive: true });
  const bytes = (a: Float32Array | Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  writeFileSync(join(dir, 'base.f32'), bytes(base));
  writeFileSync(join(dir, 'queries.f32'), bytes(queries));
  writeFileSync(join(dir, 'truth-flat.i32'), bytes(truth.flat));
  writeFileSync(join(dir, 'truth-ivf.i32'), bytes(truth.ivf));
  const header = {
    dim,
    n: sizes.n,
    nq: sizes.nq,
    k: K,
    batch: sizes.batch,
    trainNum: sizes.trainNum,
    servers: SERVERS,
    seeds: SEEDS,
    counts: sizes.counts,
    metadata: 'String(row)',
    files: { base: 'base.f32', queries: 'queries.f32', truthFlat: 'truth-flat.i32', truthIvf: 'truth-ivf.i32' },
    truthMetric: { flat: 'dot', ivf: 'l2' },
  };
  writeFileSync(join(dir, 'header.json'), `${JSON.stringify(header, null, 2)}\n`);
}

type Floor = { seconds: number; cpuSeconds: number; vecPerSec: number };

function originalMarkdown(rec: { name: string; startedAt: string; argv: string[]; sizes: Sizes; loadAtStart: number[]; loadAtEnd: number[]; runs: OriginalRun[]; ivfFloors: Floor[] }, opts: Opts): string {
  const L = (n: number[]) => n.map((v) => v.toFixed(2)).join(' / ');
  const out: string[] = [];
  const s = rec.sizes;
  out.push(`# The original's workload, like for like: ${rec.name}`);
  out.push('');
  out.push(
    `\`npm run bench -- --original ${rec.argv.join(' ')}\`, ${rec.startedAt}. ${s.n.toLocaleString('en-US')} x 128 uniform [0, 1), batches of ${s.batch.toLocaleString('en-US')}, ` +
      `metadata String(row), 4 servers x 1 thread, top-10; Flat by inner product, IVF = IVF1024,Flat by L2, nprobe 16, trained per server on its first ${s.trainNum.toLocaleString('en-US')} vectors. ` +
      `Medians of ${rec.runs.length / (opts.kinds.length * opts.modes.length)} round(s), durability modes alternating. Load average (1/5/15 min) at start ${L(rec.loadAtStart)}, at end ${L(rec.loadAtEnd)}. ` +
      'The original\'s column is issue 14\'s (measured on another, faster machine, not in this run; bench/results/original-side-by-side.md has it side by side).',
  );
  for (const kind of opts.kinds) {
    const o = ORIGINAL[kind];
    out.push('');
    out.push(`## ${kind === 'flat' ? 'Flat' : 'IVF1024,Flat'}`);
    out.push('');
    out.push(`| figure | ${opts.modes.map((m) => `dfaiss (${m})`).join(' | ')} | original (measured elsewhere) | ${opts.modes.map((m) => `${m} / original`).join(' | ')} |`);
    out.push(`|---|${opts.modes.map(() => '---:|').join('')}---:|${opts.modes.map(() => '---:|').join('')}`);
    const pick = (mode: Durability, f: (r: OriginalRun) => number) => median(rec.runs.filter((r) => r.kind === kind && r.durability === mode).map(f));
    const row = (label: string, f: (r: OriginalRun) => number, orig?: number | string) => {
      const vals = opts.modes.map((m) => pick(m, f));
      const ratios = vals.map((v) => (typeof orig === 'number' ? fmt(v / orig) + 'x' : ''));
      out.push(`| ${label} | ${vals.map((v) => fmt(v)).join(' | ')} | ${orig === undefined ? '' : typeof orig === 'number' ? fmt(orig) : orig} | ${ratios.join(' | ')} |`);
    };
    row('ingest (vec/s)', (r) => r.ingestVecPerSec, o.ingest);
    row('ingest: all adds acknowledged (s)', (r) => r.sendSeconds);
    row('ingest: every shard trained (s)', (r) => r.trainedSeconds);
    row('batch-1 p50 (ms)', (r) => r.batch1.p50, o.p50);
    row('batch-1 p99 (ms)', (r) => r.batch1.p99, o.p99);
    row('batch-100 QPS', (r) => r.batch100Qps, o.qps100);
    row('recall@10 vs exact', (r) => r.recall);
    row('server CPU per batch-1 call, 4 servers (ms)', (r) => r.serverCpuMsPerB1);
    row('client CPU per batch-1 call (ms)', (r) => r.clientCpuMsPerB1);
    row('peak RSS per server, worst (MiB)', (r) => Math.max(...r.peakRssMiB), o.rssMiB);
    row('disk / input bytes after ingest', (r) => r.diskPerInputAfterIngest);
    row('disk / input bytes after saveIndex', (r) => r.diskPerInputAfterSave);
    if (kind === 'ivf' && rec.ivfFloors.length > 0) {
      const f = rec.ivfFloors;
      out.push('');
      out.push(
        `In-process floor, FAISS alone (4 indexes x 1 thread in one process, each trained on its shard's first ${s.trainNum.toLocaleString('en-US')} rows, then given its share): ` +
          `${fmt(median(f.map((x) => x.vecPerSec)))} vec/s (median; ${f.map((x) => `${fmt(x.seconds)} s wall / ${fmt(x.cpuSeconds)} CPU-s`).join(', ')}).`,
      );
    }
    out.push('');
    out.push(
      'Runs: ' +
        rec.runs
          .filter((r) => r.kind === kind)
          .map((r) => `${r.durability} #${r.round} ${fmt(r.ingestVecPerSec)} vec/s, b1 ${fmt(r.batch1.p50)}/${fmt(r.batch1.p99)} ms (other processes ${fmt(r.foreignCpuSeconds)} CPU-s, load ${r.load[0]!.toFixed(2)})`)
          .join('; ') +
        '.',
    );
  }
  out.push('');
  return out.join('\n');
}
