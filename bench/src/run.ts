/**
 * The benchmark scenario (issue 6), fixed and reproducible:
 *
 * - data: SyntheticDataset 500,000 x 128 (seed 1234, real cluster structure) and Debian's
 *   Fashion-MNIST 60,000 x 784 (queries: the first 1000 test images); --quick uses 100k
 *   synthetic and 20k Fashion-MNIST rows, 500 queries and fewer repetitions;
 * - per data set and index type (Flat l2; IVF1024,Flat nprobe 16):
 *   the in-process limits (FaissIndex: 1 index x 2 threads; 2 shards x 1 thread), then
 *   dfaiss with 4 fresh `dfaiss server` processes (1 thread each) and one IndexClient;
 * - measured: ingest vec/s, batch-1 p50/p99, batch-10 and batch-100 QPS, recall@10 vs
 *   exact (a Flat index), peak RSS per server (VmHWM);
 * - written: bench/results/<name>.json and <name>.md (name: 'full' or 'quick' unless --name).
 *
 *   npm run bench [-- --quick] [--name N] [--datasets synthetic,fashion-mnist] [--kinds flat,ivf]
 *                 [--no-limit] [--no-dfaiss] [--no-settle] [--wait-quiet [seconds]] [--retry-noisy [n]]
 *                 [--server-prof DIR] [--out DIR]
 *   npm run bench -- --filters [--quick] [--kinds flat,ivf,hnswsq]   (filtered search, see filters.ts)
 *
 * --retry-noisy n: a case during which other processes used more than 1% of the machine's
 * CPU (measured from /proc/stat minus our own processes) is run again, up to n more times
 * (after waiting for quiet again with --wait-quiet); the quietest attempt is kept.
 *
 * After ingest, searches wait until the servers are idle (background work such as the
 * post-training snapshot; reported as "settle"); --no-settle searches at once.
 *
 * First, the FAISS build comparison (builds.ts, issue 11): every index type in-process
 * with Debian's generic FAISS and with the build setup made for this CPU, written to
 * bench/results/<name>-builds.{json,md}. --no-builds skips it, --builds-only runs only it,
 * --pq adds the PQ variants of the regression study, --only PQ,SQ keeps the cases whose factory contains one of those, --variant name=prefix adds a build
 * of our binding against another FAISS (e.g. --variant avx2-unpatched=$HOME/faiss-avx2).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FaissIndex, faissBuild, setOmpNumThreads } from '../../dist/native/index.js';
import { recallAtK } from '../../dist/datasets/exact.js';
import { machineBusySeconds } from './cluster.js';
import { runDfaiss } from './dfaiss.js';
import { runLimits } from './limit.js';
import { checkTargets, markdown, type CaseResult, type RunRecord } from './report.js';
import { buildsMarkdown, defaultVariant, genericVariant, runBuildComparison, type Variant } from './builds.js';
import { flagValue, nowMs, sleep } from './stats.js';
import {
  FULL_COUNTS,
  FULL_SIZES,
  K,
  QUICK_COUNTS,
  QUICK_SIZES,
  loadDataset,
  type Dataset,
  type DatasetName,
  type IndexKind,
  type SearchCounts,
} from './workload.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

interface Options {
  quick: boolean;
  name: string;
  datasets: DatasetName[];
  kinds: IndexKind[];
  limit: boolean;
  dfaiss: boolean;
  waitQuiet: number;
  serverProf: string | null;
  out: string;
  settle: boolean;
  /** Extra attempts per case when other processes used more than NOISY_SHARE of the machine. */
  retries: number;
  builds: boolean;
  buildsOnly: boolean;
  pq: boolean;
  variants: Array<{ name: string; prefix: string }>;
  /** Only the build-comparison cases whose factory string contains one of these. */
  only: string[];
  /** Base vectors of the build comparison (default 200k, --quick 50k). */
  buildsN: number;
  buildsRounds: number;
}

/** A case is redone when other processes used more than this share of the machine's CPU during it. */
const NOISY_SHARE = 0.01;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    quick: false,
    name: '',
    datasets: ['synthetic', 'fashion-mnist'],
    kinds: ['flat', 'ivf'],
    limit: true,
    dfaiss: true,
    waitQuiet: 0,
    serverProf: null,
    out: join(REPO, 'bench', 'results'),
    settle: true,
    retries: 0,
    builds: true,
    buildsOnly: false,
    pq: false,
    variants: [],
    only: [],
    buildsN: 0,
    buildsRounds: 0,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => flagValue(argv, i++);
    if (a === '--quick') o.quick = true;
    else if (a === '--name') o.name = next();
    else if (a === '--datasets') o.datasets = next().split(',') as DatasetName[];
    else if (a === '--kinds') o.kinds = next().split(',') as IndexKind[];
    else if (a === '--no-limit') o.limit = false;
    else if (a === '--no-dfaiss') o.dfaiss = false;
    else if (a === '--wait-quiet') o.waitQuiet = /^\d+$/.test(argv[i + 1] ?? '') ? Number(next()) : 600;
    else if (a === '--server-prof') o.serverProf = next();
    else if (a === '--out') o.out = next();
    else if (a === '--no-settle') o.settle = false;
    else if (a === '--retry-noisy') o.retries = /^\d+$/.test(argv[i + 1] ?? '') ? Number(next()) : 3;
    else if (a === '--no-builds') o.builds = false;
    else if (a === '--builds-only') o.buildsOnly = true;
    else if (a === '--pq') o.pq = true;
    else if (a === '--only') o.only = next().split(',');
    else if (a === '--builds-n') o.buildsN = Number(next());
    else if (a === '--builds-rounds') o.buildsRounds = Number(next());
    else if (a === '--variant') {
      const m = /^([\w.-]+)=(.+)$/.exec(next());
      if (!m) throw new Error('--variant needs name=faiss-prefix');
      o.variants.push({ name: m[1]!, prefix: m[2]! });
    } else if (a === '--help' || a === '-h') {
      console.log('npm run bench [-- --quick] [--name N] [--datasets synthetic,fashion-mnist] [--kinds flat,ivf] [--no-limit] [--no-dfaiss] [--no-settle] [--wait-quiet [seconds]] [--retry-noisy [n]] [--server-prof DIR] [--out DIR] [--no-builds | --builds-only] [--pq] [--only s1,s2] [--builds-n N] [--builds-rounds R] [--variant name=prefix]');
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (try --help)`);
  }
  for (const d of o.datasets) if (d !== 'synthetic' && d !== 'fashion-mnist') throw new Error(`unknown data set ${d}`);
  for (const k of o.kinds) if (k !== 'flat' && k !== 'ivf') throw new Error(`unknown index kind ${k}`);
  o.name ||= o.quick ? 'quick' : 'full';
  return o;
}

const log = (msg: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

function gitInfo(): { commit: string; dirty: boolean } {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: REPO, encoding: 'utf8' }).trim() !== '';
    return { commit, dirty };
  } catch {
    return { commit: 'unknown', dirty: false };
  }
}

/** Waits until the 1-minute load average is below threshold (checking every 15 s), up to maxSeconds. */
async function waitQuiet(maxSeconds: number, threshold: number): Promise<{ waitedSeconds: number; threshold: number; reached: boolean }> {
  const t0 = nowMs();
  for (;;) {
    const l1 = loadavg()[0]!;
    const waited = (nowMs() - t0) / 1000;
    if (l1 < threshold) return { waitedSeconds: waited, threshold, reached: true };
    if (waited >= maxSeconds) {
      log(`load ${l1.toFixed(2)} still >= ${threshold} after ${waited.toFixed(0)} s: measuring anyway`);
      return { waitedSeconds: waited, threshold, reached: false };
    }
    log(`load ${l1.toFixed(2)} >= ${threshold}: waiting for a quiet machine`);
    await sleep(15_000);
  }
}

/** Exact top-K of every query: a Flat index over the whole base, 2 threads. */
async function exactIds(ds: Dataset): Promise<Int32Array> {
  setOmpNumThreads(2);
  const flat = FaissIndex.fromFactory(ds.dim, 'Flat', 'l2');
  await flat.add(ds.base);
  const r = await flat.search(ds.queries, K);
  return Int32Array.from(r.labels, (v) => Number(v));
}

async function runCase(ds: Dataset, kind: IndexKind, truth: Int32Array, counts: SearchCounts, opts: Options, serverNodeArgs: string[] | undefined): Promise<CaseResult> {
  const name = ds.name;
  const c0 = nowMs();
  const c: CaseResult = { dataset: name, kind, n: ds.n, dim: ds.dim, nq: ds.nq, loadBefore: loadavg(), loadAfter: [], seconds: 0, foreignCpuSeconds: 0, attempts: 1 };
  const busy0 = machineBusySeconds();
  const own0 = process.cpuUsage();
  log(`${name} ${kind}: load ${c.loadBefore.map((v) => v.toFixed(2)).join(' ')}`);
  if (opts.limit) {
    const [l1, l2] = await runLimits(ds, kind, counts, log);
    c.limit1 = { ...l1!, recall: recallAtK(truth, l1!.ids, ds.nq, K) };
    c.limit2 = { ...l2!, recall: recallAtK(truth, l2!.ids, ds.nq, K) };
  }
  if (opts.dfaiss) {
    const d = await runDfaiss(ds, kind, counts, log, { settle: opts.settle, ingestReps: counts.ingestReps, ...(serverNodeArgs ? { serverNodeArgs } : {}) });
    c.dfaiss = { ...d, recall: recallAtK(truth, d.ids, ds.nq, K) };
  }
  c.loadAfter = loadavg();
  c.seconds = (nowMs() - c0) / 1000;
  const own = process.cpuUsage(own0);
  c.foreignCpuSeconds = Math.max(0, machineBusySeconds() - busy0 - (own.user + own.system) / 1e6 - (c.dfaiss?.serverCpuSeconds ?? 0));
  const s = (r?: { batch1: { p50: number; p99: number }; batch100: { qps: number }; ingest: { vecPerSec: number }; recall: number }) =>
    r ? `ingest ${Math.round(r.ingest.vecPerSec)}/s, b1 p50 ${r.batch1.p50.toFixed(2)} p99 ${r.batch1.p99.toFixed(2)} ms, b100 ${Math.round(r.batch100.qps)} QPS, recall ${r.recall.toFixed(3)}` : '-';
  log(`${name} ${kind} done in ${c.seconds.toFixed(1)} s, other processes used ${c.foreignCpuSeconds.toFixed(1)} CPU-s\n  dfaiss:  ${s(c.dfaiss)}\n  1 index: ${s(c.limit1)}\n  2 shard: ${s(c.limit2)}`);
  return c;
}

const faissVersion = (): string => `${faissBuild.version} ${faissBuild.simd} (${faissBuild.compileOptions}; BLAS ${faissBuild.blas})`;

/** The FAISS build comparison; writes <name>-builds.{json,md}. */
async function runBuilds(opts: Options): Promise<void> {
  const variants: Variant[] = [genericVariant()];
  for (const v of opts.variants) {
    execFileSync('bash', [join(REPO, 'scripts', 'build-variant.sh'), v.name, v.prefix], { stdio: ['ignore', 'inherit', 'inherit'] });
    variants.push({ name: v.name, dir: join(REPO, 'build', 'variants', v.name) });
  }
  variants.push(defaultVariant());
  const rec = await runBuildComparison({
    n: opts.buildsN || (opts.quick ? 50_000 : 200_000),
    nq: opts.quick ? 500 : 1000,
    nlist: opts.quick ? 256 : 1024,
    rounds: opts.buildsRounds || (opts.quick ? 3 : 5),
    seconds: opts.quick ? 0.3 : 1,
    groups: opts.pq ? ['core', 'pq'] : ['core'],
    only: opts.only,
    variants,
    log,
  });
  mkdirSync(opts.out, { recursive: true });
  const base = join(opts.out, `${opts.name}-builds`);
  writeFileSync(`${base}.json`, `${JSON.stringify({ startedAt: new Date().toISOString(), git: gitInfo(), ...rec }, null, 2)}\n`);
  const md = `# FAISS builds compared (${opts.name})\n\n${buildsMarkdown(rec)}`;
  writeFileSync(`${base}.md`, md);
  console.log(md);
  log(`wrote ${base}.json and .md in ${rec.seconds.toFixed(0)} s`);
}

export async function main(argv: string[]): Promise<void> {
  if (argv.includes('--original')) {
    // Issue 14's like-for-like scenario: the original's own workload (see original.ts).
    const { runOriginalBench } = await import('./original.js');
    await runOriginalBench(argv.filter((a) => a !== '--original'));
    return;
  }
  if (argv.includes('--records')) {
    // Issue 16's scenario: add / upsert / delete throughput, compaction cost (see records.ts).
    const { runRecordsBench } = await import('./records.js');
    await runRecordsBench(argv.filter((a) => a !== '--records'));
    return;
  }
  if (argv.includes('--filters')) {
    // Issue 17: server-side filter vs client-side searchWithFilter, payload index, crossover (see filters.ts).
    const { runFiltersBench } = await import('./filters.js');
    await runFiltersBench(argv.filter((a) => a !== '--filters'));
    return;
  }
  const withRecords = !argv.includes('--no-records');
  const opts = parseArgs(argv.filter((a) => a !== '--no-records'));
  if (opts.builds || opts.buildsOnly) await runBuilds(opts);
  if (opts.buildsOnly) return;
  const counts: SearchCounts = opts.quick ? QUICK_COUNTS : FULL_COUNTS;
  const sizes = opts.quick ? QUICK_SIZES : FULL_SIZES;
  const quietWait = opts.waitQuiet > 0 ? await waitQuiet(opts.waitQuiet, 0.5) : null;
  const t0 = nowMs();
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg();
  log(`${opts.name}: load ${loadAtStart.map((v) => v.toFixed(2)).join(' ')}; data sets ${opts.datasets.join(', ')}; kinds ${opts.kinds.join(', ')}`);
  if (loadAtStart[0]! > 0.5) log(`warning: 1-min load ${loadAtStart[0]!.toFixed(2)} > 0.5: timings will be noisy (--wait-quiet waits for a quiet machine)`);

  const serverNodeArgs = opts.serverProf ? ['--cpu-prof', '--cpu-prof-dir', opts.serverProf] : undefined;
  if (opts.serverProf) mkdirSync(opts.serverProf, { recursive: true });

  const record: RunRecord = {
    name: opts.name,
    mode: opts.quick ? 'quick' : 'full',
    argv,
    startedAt,
    seconds: 0,
    git: gitInfo(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '?',
      memGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      faiss: faissVersion(),
      ompWaitPolicy: process.env.OMP_WAIT_POLICY ?? '',
      uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? '4 (default)',
    },
    loadAtStart,
    loadAtEnd: [],
    quietWait,
    counts: { ...counts, nq: sizes.nq },
    datasets: [],
    cases: [],
    targets: [],
    retryWaitSeconds: 0,
  };

  for (const name of opts.datasets) {
    let t = nowMs();
    const ds = loadDataset(name, sizes);
    const loadSeconds = (nowMs() - t) / 1000;
    t = nowMs();
    const truth = await exactIds(ds);
    const truthSeconds = (nowMs() - t) / 1000;
    log(`${name}: ${ds.n} x ${ds.dim} ready in ${loadSeconds.toFixed(1)} s, exact top-${K} of ${ds.nq} queries in ${truthSeconds.toFixed(1)} s`);
    record.datasets.push({ name, description: ds.description, n: ds.n, dim: ds.dim, nq: ds.nq, batch: ds.batch, trainPerShard: ds.trainPerShard, loadSeconds, truthSeconds });

    for (const kind of opts.kinds) {
      let best: CaseResult | null = null;
      for (let attempt = 0; attempt <= opts.retries; attempt++) {
        if (attempt > 0 && opts.waitQuiet > 0) record.retryWaitSeconds += (await waitQuiet(opts.waitQuiet, 0.5)).waitedSeconds;
        const c = await runCase(ds, kind, truth, counts, opts, serverNodeArgs);
        const share = c.foreignCpuSeconds / (c.seconds * cpus().length);
        if (!best || c.foreignCpuSeconds / c.seconds < best.foreignCpuSeconds / best.seconds) best = c;
        best.attempts = attempt + 1;
        if (share <= NOISY_SHARE) break;
        if (attempt < opts.retries) log(`${name} ${kind}: other processes used ${(100 * share).toFixed(1)}% of the machine: running the case again`);
      }
      record.cases.push(best!);
    }
  }

  record.loadAtEnd = loadavg();
  record.seconds = (nowMs() - t0) / 1000;
  record.targets = checkTargets(record.cases);
  mkdirSync(opts.out, { recursive: true });
  const json = JSON.stringify(record, (key, v: unknown) => (key === 'ids' ? undefined : v), 2);
  writeFileSync(join(opts.out, `${opts.name}.json`), `${json}\n`);
  const md = markdown(record);
  writeFileSync(join(opts.out, `${opts.name}.md`), md);
  console.log(md);
  log(`wrote ${join(opts.out, `${opts.name}.json`)} and .md in ${record.seconds.toFixed(0)} s total`);
  if (withRecords && opts.dfaiss) {
    // Then the records scenario: delete and upsert throughput next to add (records-{quick,full}.md).
    const { runRecordsBench } = await import('./records.js');
    await runRecordsBench([...(opts.quick ? ['--quick'] : []), '--out', opts.out]);
  }
}
