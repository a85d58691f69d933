/**
 * FAISS build comparison (issue 11): the same index files searched in-process through our
 * binding, once per FAISS build (Debian's generic libfaiss.a vs the build setup made for
 * this CPU), on 1 FAISS thread, batch 1 and batch 100, recall@10 against exact search.
 *
 * Each index type is trained and filled once (with the default build, 2 threads) and
 * written to a file; every measurement then runs in a fresh child process
 * (builds-worker.ts) that loads one build (DFAISS_NATIVE_DIR). Rounds interleave the
 * builds (A B, B A, A B, ...) so that load from other work on a shared machine hits both
 * alike; the table shows per-build medians over the rounds.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { recallAtK } from '../../dist/datasets/exact.js';
import { SyntheticDataset } from '../../dist/datasets/synthetic.js';
import { FaissIndex, faissBuild, setOmpNumThreads, type FaissBuildInfo } from '../../dist/native/index.js';
import { fmt, nowMs } from './stats.js';
import type { WorkerCase, WorkerJob, WorkerReport } from './builds-worker.js';
import { SYNTHETIC_SEED } from './workload.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const K = 10;

export interface IndexCase {
  /** Row label, e.g. 'IVF-PQ (knnlm)'. */
  name: string;
  factory: string;
  params: Array<[string, number]>;
  /** 'core': the issue's table; 'pq': the extra PQ variants of the regression study. */
  group: 'core' | 'pq';
}

export function indexCases(nlist: number): IndexCase[] {
  const ivf = (name: string, suffix: string, group: IndexCase['group'] = 'core'): IndexCase => ({
    name,
    factory: `IVF${nlist},${suffix}`,
    params: [['nprobe', 16]],
    group,
  });
  return [
    { name: 'Flat', factory: 'Flat', params: [], group: 'core' },
    ivf('IVF-Flat', 'Flat'),
    ivf('IVF-SQ8', 'SQ8'),
    ivf('IVF-PQ 16x8 (knnlm)', 'PQ16x8np'),
    ivf('IVF-PQ 32x4 fast scan', 'PQ32x4fs'),
    ivf('IVF-PQ 16x4 fast scan', 'PQ16x4fs'),
    { name: 'HNSW-SQ8', factory: 'HNSW32,SQ8', params: [['efSearch', 64]], group: 'core' },
    ivf('IVF-PQ 32x8 (knnlm)', 'PQ32x8np', 'pq'),
    ivf('IVF-PQ 8x8 (knnlm)', 'PQ8x8np', 'pq'),
    ivf('IVF-PQ 64x8 (knnlm default code size)', 'PQ64x8np', 'pq'),
    { name: 'PQ 16x8 (no IVF)', factory: 'PQ16x8np', params: [], group: 'pq' },
    // The factory default (with polysemous training), as issue 11 measured it.
    ivf('IVF-PQ 16 (polysemous training)', 'PQ16', 'pq'),
  ];
}

export interface Variant {
  name: string;
  /** Folder with dfaiss_native.node and dfaiss_cpu.node. */
  dir: string;
}

export interface BuildsOptions {
  n: number;
  nq: number;
  nlist: number;
  rounds: number;
  seconds: number;
  groups: Array<IndexCase['group']>;
  /** Keep only cases whose factory contains one of these (all when empty). */
  only: string[];
  variants: Variant[];
  log: (msg: string) => void;
}

export interface BuildsRow {
  name: string;
  factory: string;
  params: Array<[string, number]>;
  group: IndexCase['group'];
  /** Per variant: median QPS over the rounds (wall clock, and per CPU-second), every round's value, recall@10. */
  results: Record<string, VariantResult>;
}

export interface VariantResult {
  batch1Qps: number;
  batch100Qps: number;
  batch1CpuQps: number;
  batch100CpuQps: number;
  batch1All: number[];
  batch100All: number[];
  recall: number;
}

export interface BuildsRecord {
  dataset: string;
  n: number;
  nq: number;
  dim: number;
  rounds: number;
  secondsPerMeasurement: number;
  variants: Array<Variant & { faiss: FaissBuildInfo }>;
  buildSeconds: Record<string, number>;
  loadBefore: number[];
  loadAfter: number[];
  rows: BuildsRow[];
  seconds: number;
}

/** The generic variant: our binding built against Debian's libfaiss.a (scripts/build-variant.sh). */
export function genericVariant(): Variant {
  execFileSync('bash', [join(REPO, 'scripts', 'build-variant.sh'), 'generic', '/usr'], { stdio: ['ignore', 'inherit', 'inherit'] });
  return { name: 'generic', dir: join(REPO, 'build', 'variants', 'generic') };
}

/** The build setup linked (build/Release). */
export function defaultVariant(): Variant {
  return { name: faissBuild.simd === 'generic' ? 'default (generic)' : faissBuild.simd, dir: join(REPO, 'build', 'Release') };
}

function runWorker(variant: Variant, job: WorkerJob, jobFile: string): Promise<WorkerReport> {
  writeFileSync(jobFile, JSON.stringify(job));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO, 'bench', 'dist', 'builds-worker.js'), jobFile], {
      env: { ...process.env, DFAISS_NATIVE_DIR: variant.dir, OMP_WAIT_POLICY: 'PASSIVE', OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`builds-worker (${variant.name}) exited with ${code}`));
      else resolve(JSON.parse(out) as WorkerReport);
    });
  });
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export async function runBuildComparison(o: BuildsOptions): Promise<BuildsRecord> {
  const t0 = nowMs();
  const dim = 128;
  const ds = new SyntheticDataset({ dim, seed: SYNTHETIC_SEED });
  const base = ds.base(o.n);
  const queries = ds.queries(o.nq);
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-builds-'));
  try {
    const queriesFile = join(dir, 'queries.f32');
    writeFileSync(queriesFile, queries);
    setOmpNumThreads(2);
    const exact = FaissIndex.fromFactory(dim, 'Flat', 'l2');
    await exact.add(base);
    const truth = (await exact.search(queries, K)).labels;

    const cases = indexCases(o.nlist).filter((c) => o.groups.includes(c.group) && (o.only.length === 0 || o.only.some((s) => c.factory.includes(s))));
    const buildSeconds: Record<string, number> = {};
    const workerCases: WorkerCase[] = [];
    for (const c of cases) {
      const t = nowMs();
      const index = FaissIndex.fromFactory(dim, c.factory, 'l2');
      await index.train(base);
      await index.add(base);
      const file = join(dir, `${workerCases.length}.faiss`);
      await index.writeFile(file);
      buildSeconds[c.factory] = (nowMs() - t) / 1000;
      o.log(`builds: ${c.factory} trained and filled in ${buildSeconds[c.factory]!.toFixed(1)} s`);
      workerCases.push({ name: c.name, file, params: c.params });
    }

    const loadBefore = loadavg();
    const reports: Record<string, WorkerReport[]> = Object.fromEntries(o.variants.map((v) => [v.name, []]));
    const recall: Record<string, number[]> = {};
    for (let r = 0; r < o.rounds; r++) {
      // A B, B A, A B...: neither build always runs first after the index files were written.
      const order = r % 2 === 0 ? o.variants : [...o.variants].reverse();
      for (const v of order) {
        const job: WorkerJob = { queriesFile, dim, nq: o.nq, k: K, seconds: o.seconds, ids: r < 2, cases: workerCases };
        const rep = await runWorker(v, job, join(dir, 'job.json'));
        reports[v.name]!.push(rep);
        if (rep.faiss.simd === undefined) throw new Error(`variant ${v.name} reports no SIMD level`);
        if (job.ids) {
          recall[v.name] = rep.cases.map((c) => recallAtK(truth, BigInt64Array.from(c.ids!, (x) => BigInt(x)), o.nq, K));
        }
        o.log(`builds round ${r + 1}/${o.rounds} ${v.name}: ${rep.cases.map((c) => `${c.name} ${fmt(c.batch1Qps)}/${fmt(c.batch100Qps)}`).join(', ')} (load ${loadavg()[0]!.toFixed(2)})`);
      }
    }
    const rows: BuildsRow[] = cases.map((c, i) => ({
      name: c.name,
      factory: c.factory,
      params: c.params,
      group: c.group,
      results: Object.fromEntries(
        o.variants.map((v) => {
          const all = (f: (c: WorkerReport['cases'][number]) => number): number[] => reports[v.name]!.map((rep) => f(rep.cases[i]!));
          const b1 = all((c) => c.batch1Qps);
          const b100 = all((c) => c.batch100Qps);
          const result: VariantResult = {
            batch1Qps: median(b1),
            batch100Qps: median(b100),
            batch1CpuQps: median(all((c) => c.batch1CpuQps)),
            batch100CpuQps: median(all((c) => c.batch100CpuQps)),
            batch1All: b1,
            batch100All: b100,
            recall: recall[v.name]![i]!,
          };
          return [v.name, result];
        }),
      ),
    }));
    return {
      dataset: `SyntheticDataset({ dim: ${dim}, seed: ${SYNTHETIC_SEED} }): ${o.n} base, ${o.nq} queries`,
      n: o.n,
      nq: o.nq,
      dim,
      rounds: o.rounds,
      secondsPerMeasurement: o.seconds,
      variants: o.variants.map((v) => ({ ...v, faiss: reports[v.name]![0]!.faiss })),
      buildSeconds,
      loadBefore,
      loadAfter: loadavg(),
      rows,
      seconds: (nowMs() - t0) / 1000,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Markdown table: per index type, each build's batch-1 / batch-100 QPS and recall, and the ratio to the first build. */
export function buildsMarkdown(rec: BuildsRecord): string {
  const [a, ...others] = rec.variants.map((v) => v.name);
  const lines: string[] = [];
  lines.push(`In-process FAISS through our binding, 1 FAISS thread, ${rec.dataset}; k = ${K}; medians of ${rec.rounds} interleaved rounds of at least ${rec.secondsPerMeasurement} s per measurement, each in a fresh process per build.`);
  lines.push('QPS are wall-clock; the "by CPU time" ratios divide queries by the CPU time the measuring process used instead, which other load on a shared machine disturbs far less (waiting for a core costs wall time, not CPU time).');
  lines.push('');
  for (const v of rec.variants) lines.push(`- **${v.name}**: FAISS ${v.faiss.version} ${v.faiss.simd} (${v.faiss.compileOptions}), ${v.faiss.linked ?? v.dir}; BLAS ${v.faiss.blas}`);
  lines.push(`- load average before / after: ${rec.loadBefore.map((x) => x.toFixed(2)).join(' ')} / ${rec.loadAfter.map((x) => x.toFixed(2)).join(' ')}`);
  lines.push('');
  const head = [
    'index (factory, params)',
    ...rec.variants.flatMap((v) => [`${v.name} b1 QPS`, `${v.name} b100 QPS`]),
    ...others.flatMap((o) => [`${o}/${a} b1`, `${o}/${a} b100`, `by CPU time b1`, `by CPU time b100`]),
    ...rec.variants.map((v) => `recall@10 ${v.name}`),
  ];
  lines.push(`| ${head.join(' | ')} |`);
  lines.push(`|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
  for (const r of rec.rows) {
    const p = r.params.map(([k, v]) => `${k} ${v}`).join(', ');
    const ra = r.results[a!]!;
    const cells = [
      `${r.name}: \`${r.factory}\`${p ? ` ${p}` : ''}`,
      ...rec.variants.flatMap((v) => [fmt(r.results[v.name]!.batch1Qps), fmt(r.results[v.name]!.batch100Qps)]),
      ...others.flatMap((o) => {
        const ro = r.results[o]!;
        const x = (v: number): string => `${v.toFixed(2)}x`;
        return [x(ro.batch1Qps / ra.batch1Qps), x(ro.batch100Qps / ra.batch100Qps), x(ro.batch1CpuQps / ra.batch1CpuQps), x(ro.batch100CpuQps / ra.batch100CpuQps)];
      }),
      ...rec.variants.map((v) => r.results[v.name]!.recall.toFixed(3)),
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return `${lines.join('\n')}\n`;
}
