/**
 * Child process of the FAISS-build comparison (builds.ts): loads the addon build named by
 * DFAISS_NATIVE_DIR (its own process, so two FAISS builds never share one), reads the
 * index files the parent wrote and times searches on 1 FAISS thread.
 *
 *   node bench/dist/builds-worker.js <job.json>     (prints one JSON line: WorkerReport)
 */
import { readFileSync } from 'node:fs';
import { FaissIndex, faissBuild, setOmpNumThreads, type FaissBuildInfo } from '../../dist/native/index.js';
import { nowMs } from './stats.js';

export interface WorkerCase {
  name: string;
  file: string;
  params: Array<[string, number]>;
}

export interface WorkerJob {
  queriesFile: string;
  dim: number;
  nq: number;
  k: number;
  /** Seconds each measurement runs for at least (batch 1, batch 100). */
  seconds: number;
  /** Return the batch-100 result ids (for recall). */
  ids: boolean;
  cases: WorkerCase[];
}

export interface WorkerCaseReport {
  name: string;
  batch1Qps: number;
  batch100Qps: number;
  /** Queries per CPU-second of this process: less sensitive than wall time to other load on a shared machine. */
  batch1CpuQps: number;
  batch100CpuQps: number;
  /** Row ids of the top-k of every query (nq*k), when the job asked. */
  ids?: number[];
}

export interface WorkerReport {
  faiss: FaissBuildInfo;
  cases: WorkerCaseReport[];
}

/**
 * Runs `once` repeatedly for at least `seconds` (and at least `minCalls` times); returns
 * calls per wall-clock second and per CPU-second of this process (all its threads).
 */
async function rate(seconds: number, minCalls: number, once: (i: number) => Promise<void>): Promise<{ wall: number; cpu: number }> {
  const t0 = nowMs();
  const c0 = process.cpuUsage();
  let calls = 0;
  while (calls < minCalls || nowMs() - t0 < seconds * 1000) await once(calls++);
  const c = process.cpuUsage(c0);
  return { wall: calls / ((nowMs() - t0) / 1000), cpu: calls / ((c.user + c.system) / 1e6) };
}

async function runCase(job: WorkerJob, queries: Float32Array, c: WorkerCase): Promise<WorkerCaseReport> {
  const { dim, nq, k } = job;
  const index = await FaissIndex.readFile(c.file);
  for (const [name, value] of c.params) await index.setParameter(name, value);
  const row = (i: number): Float32Array => queries.subarray((i % nq) * dim, ((i % nq) + 1) * dim);
  const batch = (b: number): Float32Array => queries.subarray(((b * 100) % nq) * dim, (((b * 100) % nq) + 100) * dim);

  // Untimed: the first pass over every query gives the ids for recall and warms caches.
  const ids: number[] = [];
  for (let b = 0; b < nq / 100; b++) {
    const r = await index.search(batch(b), k);
    if (job.ids) for (const l of r.labels) ids.push(Number(l));
  }
  for (let i = 0; i < 20; i++) await index.search(row(i), k);

  const b1 = await rate(job.seconds, 50, async (i) => {
    await index.search(row(i), k);
  });
  const b100 = await rate(job.seconds, 3, async (b) => {
    await index.search(batch(b), k);
  });
  return {
    name: c.name,
    batch1Qps: b1.wall,
    batch100Qps: 100 * b100.wall,
    batch1CpuQps: b1.cpu,
    batch100CpuQps: 100 * b100.cpu,
    ...(job.ids ? { ids } : {}),
  };
}

async function main(jobFile: string): Promise<void> {
  const job = JSON.parse(readFileSync(jobFile, 'utf8')) as WorkerJob;
  const bytes = readFileSync(job.queriesFile);
  const queries = new Float32Array(bytes.buffer, bytes.byteOffset, job.nq * job.dim);
  setOmpNumThreads(1);
  const cases: WorkerCaseReport[] = [];
  for (const c of job.cases) cases.push(await runCase(job, queries, c));
  const report: WorkerReport = { faiss: faissBuild, cases };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await main(process.argv[2] ?? '');
