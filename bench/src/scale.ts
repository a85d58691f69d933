/**
 * `npm run bench -- --scale` (issue 15): how dfaiss behaves at the original's deployment size.
 *
 * 1. Fan-out: a constant 400k x 128 (synthetic, clustered) IVF1024,Flat index (shared
 *    training, nprobe 16) spread over S = 1, 2, 4, ..., 64 servers (1 FAISS thread each), one
 *    client. Per S: batch-1 p50/p99, batch-100 QPS, client and server CPU per call, a tiny
 *    RPC fanned out to every server, RSS per server idle and holding its share. Beside it, the
 *    coarse-quantizer share of one shard's batch-100 search (in-process), which is what
 *    "quantize once in the client" could save.
 * 2. 768-d fp16 loads: a 2M x 768 float16 file (synthetic, clustered; cached under the OS temp
 *    folder) loaded with `dfaiss load --dstore-fp16` (the CLI, as a user runs it) into 8 servers
 *    for knnlm, ivfsq and hnswsq: rows 0..trainRows first (includes training), then the rest
 *    with --append into the trained index (the add rate once trained), beside `dd` of the file
 *    from the page cache; recall@10 at three nprobe/efSearch values against exact search;
 *    RSS per server.
 *
 *   npm run bench -- --scale [--servers 1,2,4,8,16,32,64] [--fanout-n 400000] [--load-rows 2000000]
 *                   [--types knnlm,ivfsq,hnswsq] [--load-servers 8] [--no-fanout] [--no-load] [--name N]
 *                   [--single-load shared,per-shard] [--ranks-per-process K]
 *
 * --single-load: for each type, one `dfaiss load` of every row (no split at 200k), as issue 15
 * measured it, in each train mode given ('per-shard' is how every shard trained its own PQ
 * before shared training): seconds sending, until TRAINED, until every row is searchable.
 *
 * Results: bench/results/<name>.json and .md (name 'scale' unless --name).
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IndexClient } from '../../dist/client/index-client.js';
import type { IndexCfg } from '../../dist/config/index.js';
import { SyntheticDataset } from '../../dist/datasets/synthetic.js';
import { FaissIndex, fp16ToFp32, setOmpNumThreads } from '../../dist/native/index.js';
import { CLI, procCpuSeconds, startCluster } from './cluster.js';
import { fmt, latencyStats, nowMs, type LatencyStats } from './stats.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const MiB = 1024 * 1024;
const K = 10;
const log = (msg: string): void => void process.stderr.write(`[scale ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

interface ScaleOptions {
  servers: number[];
  fanoutN: number;
  loadRows: number;
  loadServers: number;
  types: string[];
  fanout: boolean;
  load: boolean;
  /** Also one `dfaiss load` of every row in each of these train modes (issue 15's procedure). */
  singleLoad: Array<'shared' | 'per-shard'>;
  /** Fan-out servers per process (S must be a multiple; smaller S run with S per process). */
  ranksPerProcess: number;
  name: string;
  out: string;
}

function parse(argv: string[]): ScaleOptions {
  const o: ScaleOptions = {
    servers: [1, 2, 4, 8, 16, 32, 64],
    fanoutN: 400_000,
    loadRows: 2_000_000,
    loadServers: 8,
    types: ['knnlm', 'ivfsq', 'hnswsq'],
    fanout: true,
    load: true,
    singleLoad: [],
    ranksPerProcess: 1,
    name: 'scale',
    out: join(REPO, 'bench', 'results'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = (v: string): number => {
      if (!/^\d+$/.test(v)) throw new Error(`${a} needs a positive integer, got '${v}'`);
      return Number(v);
    };
    if (a === '--scale') continue;
    else if (a === '--servers') o.servers = next().split(',').map(int);
    else if (a === '--fanout-n') o.fanoutN = int(next());
    else if (a === '--load-rows') o.loadRows = int(next());
    else if (a === '--load-servers') o.loadServers = int(next());
    else if (a === '--types') o.types = next().split(',');
    else if (a === '--no-fanout') o.fanout = false;
    else if (a === '--no-load') o.load = false;
    else if (a === '--ranks-per-process') o.ranksPerProcess = int(next());
    else if (a === '--single-load') o.singleLoad = next().split(',').map((m) => (m === 'per-shard' ? 'per-shard' : 'shared'));
    else if (a === '--name') o.name = next();
    else if (a === '--out') o.out = next();
    else if (a === '--help' || a === '-h') {
      console.log('npm run bench -- --scale [--servers 1,2,4,8,16,32,64] [--fanout-n 400000] [--load-rows 2000000] [--types knnlm,ivfsq,hnswsq] [--load-servers 8] [--no-fanout] [--no-load] [--single-load shared,per-shard] [--ranks-per-process K] [--name N] [--out DIR]');
      process.exit(0);
    } else throw new Error(`unknown argument ${a} for --scale (try --scale --help)`);
  }
  for (const t of o.types) if (!['knnlm', 'ivfsq', 'hnswsq'].includes(t)) throw new Error(`--types: '${t}' is not one of knnlm, ivfsq, hnswsq`);
  return o;
}

/** CPU seconds all of a cluster's servers used so far. */
// Once per process: with --ranks-per-process several ranks share one pid.
const serversCpuSeconds = (cluster: { servers: ReadonlyArray<{ pid: number }> }): number => [...new Set(cluster.servers.map((s) => s.pid))].reduce((a, pid) => a + procCpuSeconds(pid), 0);

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

// ---------------------------------------------------------------------------------------
// 1. Fan-out
// ---------------------------------------------------------------------------------------

interface FanoutRow {
  servers: number;
  ingestSeconds: number;
  b1: LatencyStats;
  b100Qps: number;
  /** Client CPU ms per batch-1 search / per batch-100 call. */
  clientCpuMsB1: number;
  clientCpuMsB100: number;
  /** Summed server CPU ms per batch-1 search / per batch-100 call (all servers). */
  serverCpuMsB1: number;
  serverCpuMsB100: number;
  /** The same searches quantized once (sharedQuantize 'always'); identical: same hits as without. */
  quantizeOnce: {
    identical: boolean;
    b100Qps: number;
    clientCpuMsB100: number;
    serverCpuMsB100: number;
    /** Batch-1 quantized once: client and server CPU ms and mean latency per search. */
    b1: { clientCpuMs: number; serverCpuMs: number; meanMs: number };
    /** 1-minute load average after the measurement. */
    loadAvg: number;
  };
  /** A tiny RPC (getState) on every server at once. */
  tiny: LatencyStats;
  idleRssMiB: number;
  loadedRssMiB: number;
}

const FANOUT_DIM = 128;
const NLIST = 1024;
const NPROBE = 16;

async function fanoutCase(s: number, base: Float32Array, queries: Float32Array, n: number, ranksPerProcess: number): Promise<FanoutRow> {
  const cluster = await startCluster(s, { threads: 1, ranksPerProcess: Math.min(s, ranksPerProcess) });
  try {
    const idle = cluster.memory();
    const client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 600_000, sharedQuantize: 'never' });
    try {
      const id = 'fanout';
      const cfg: Partial<IndexCfg> = { indexBuilderType: 'ivf_simple', dim: FANOUT_DIM, metric: 'l2', centroids: NLIST, nprobe: NPROBE, trainNum: 100_000, trainMode: 'shared', durability: 'none' };
      await client.createIndex(id, cfg);
      const t0 = nowMs();
      const bs = 10_000;
      const adds: Array<Promise<void>> = [];
      for (let r = 0; r < n; r += bs) {
        const rows = Math.min(bs, n - r);
        adds.push(client.addIndexData(id, base.subarray(r * FANOUT_DIM, (r + rows) * FANOUT_DIM), Array.from({ length: rows }, (_, i) => r + i)));
      }
      await Promise.all(adds);
      await client.syncTrain(id);
      for (let i = 0; i < 6000 && (await client.getNtotal(id)) < n; i++) await new Promise((r) => setTimeout(r, 50));
      const ingestSeconds = (nowMs() - t0) / 1000;
      const srvCpu = (): number => serversCpuSeconds(cluster) * 1000;

      let quantizedB1: FanoutRow['quantizeOnce']['b1'] | undefined;
      const nq = queries.length / FANOUT_DIM;
      const q1 = (i: number): Float32Array => queries.subarray((i % nq) * FANOUT_DIM, ((i % nq) + 1) * FANOUT_DIM);
      for (let i = 0; i < 100; i++) await client.search(id, q1(i), K);
      // Fewer calls where each one is slow, so the whole curve stays within minutes.
      const calls = s >= 32 ? 300 : 600;
      const lat: number[] = [];
      let c0 = cpuMs();
      let s0 = srvCpu();
      for (let i = 0; i < calls; i++) {
        const t = nowMs();
        await client.search(id, q1(i), K);
        lat.push(nowMs() - t);
      }
      const clientCpuMsB1 = (cpuMs() - c0) / calls;
      const serverCpuMsB1 = (srvCpu() - s0) / calls;

      const reps100 = s >= 32 ? 10 : 20;
      const b100 = queries.subarray(0, 100 * FANOUT_DIM);
      // The same searches quantized once (client/quantize-once.ts), by a second client that
      // always does it, interleaved with the first (which never does) so load drifts hit both.
      const qclient = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 600_000, sharedQuantize: 'always' });
      const plain = { n: 0, clientMs: 0, serverMs: 0, ms: 0 };
      const quant = { ...plain };
      let identical: boolean;
      try {
        const [a, b] = [await client.search(id, b100, K), await qclient.search(id, b100, K)];
        identical = JSON.stringify([a.scores, a.metadata]) === JSON.stringify([b.scores, b.metadata]);
        const measure = async (c: IndexClient, q: Float32Array, reps: number, into: typeof plain): Promise<void> => {
          const [c1, s1, t1] = [cpuMs(), srvCpu(), nowMs()];
          for (let i = 0; i < reps; i++) await c.search(id, q, K);
          into.n += reps;
          into.clientMs += cpuMs() - c1;
          into.serverMs += srvCpu() - s1;
          into.ms += nowMs() - t1;
        };
        for (let r = 0; r < 4; r++) {
          await measure(client, b100, reps100 / 2, plain);
          await measure(qclient, b100, reps100 / 2, quant);
        }
        // Batch-1 quantized once: one more round trip per query.
        const q1stats = { n: 0, clientMs: 0, serverMs: 0, ms: 0 };
        await measure(qclient, q1(0), calls / 3, q1stats);
        quantizedB1 = { clientCpuMs: q1stats.clientMs / q1stats.n, serverCpuMs: q1stats.serverMs / q1stats.n, meanMs: q1stats.ms / q1stats.n };
      } finally {
        await qclient.close();
      }
      const b100Seconds = plain.ms / 1000;
      const clientCpuMsB100 = plain.clientMs / plain.n;
      const serverCpuMsB100 = plain.serverMs / plain.n;
      const quantizeOnce = {
        identical,
        b100Qps: (quant.n * 100) / (quant.ms / 1000),
        clientCpuMsB100: quant.clientMs / quant.n,
        serverCpuMsB100: quant.serverMs / quant.n,
        b1: quantizedB1!,
        loadAvg: loadavg()[0]!,
      };

      const tiny: number[] = [];
      for (let i = 0; i < 300; i++) {
        const t = nowMs();
        await client.getState(id);
        tiny.push(nowMs() - t);
      }
      const loaded = cluster.memory();
      // Per rank: a process serving K ranks appears K times in memory(), so its RSS is split K ways.
      const perProcess = Math.min(s, ranksPerProcess);
      const avgMiB = (m: Array<{ rssBytes: number }>): number => m.reduce((a, x) => a + x.rssBytes / perProcess, 0) / m.length / MiB;
      return {
        servers: s,
        ingestSeconds,
        b1: latencyStats(lat),
        b100Qps: (plain.n * 100) / b100Seconds,
        quantizeOnce,
        clientCpuMsB1,
        clientCpuMsB100,
        serverCpuMsB1,
        serverCpuMsB100,
        tiny: latencyStats(tiny),
        idleRssMiB: avgMiB(idle),
        loadedRssMiB: avgMiB(loaded),
      };
    } finally {
      await client.close();
    }
  } finally {
    await cluster.stop();
  }
}

interface QuantizerShare {
  servers: number;
  /** One shard's batch-100 IVF search (1 thread), ms. */
  shardSearchMs: number;
  /** The coarse quantizer part of it (a Flat search over the 1024 centroids, nprobe results), ms. */
  quantizerMs: number;
  /** The same search given the probe lists (searchPreassigned: what a shard does when quantized once), ms. */
  preassignedMs: number;
}

/** In-process: how much of a shard's batch-100 search is the coarse quantizer (repeated by every shard). */
async function quantizerShares(base: Float32Array, queries: Float32Array, servers: number[]): Promise<QuantizerShare[]> {
  setOmpNumThreads(1);
  const b100 = queries.subarray(0, 100 * FANOUT_DIM);
  const train = base.subarray(0, 100_000 * FANOUT_DIM);
  const time = async (fn: () => Promise<unknown>): Promise<number> => {
    await fn();
    const xs: number[] = [];
    for (let i = 0; i < 15; i++) {
      const t = nowMs();
      await fn();
      xs.push(nowMs() - t);
    }
    return latencyStats(xs).p50;
  };
  // The quantizer's cost does not depend on the shard's size: its centroids, searched for nprobe.
  const centroids = FaissIndex.fromFactory(FANOUT_DIM, 'Flat', 'l2');
  await centroids.add(base.subarray(0, NLIST * FANOUT_DIM));
  const quantizerMs = await time(() => centroids.search(b100, NPROBE));
  const out: QuantizerShare[] = [];
  for (const s of servers) {
    const share = Math.floor(base.length / FANOUT_DIM / s);
    const shard = FaissIndex.fromFactory(FANOUT_DIM, `IVF${NLIST},Flat`, 'l2');
    await shard.train(train);
    await shard.add(base.subarray(0, share * FANOUT_DIM));
    await shard.setParameter('nprobe', NPROBE);
    const lists = await shard.quantize(b100, NPROBE);
    out.push({ servers: s, shardSearchMs: await time(() => shard.search(b100, K)), quantizerMs, preassignedMs: await time(() => shard.searchPreassigned(b100, K, lists)) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// 2. 768-d fp16 loads
// ---------------------------------------------------------------------------------------

const LOAD_DIM = 768;

/** float32 -> IEEE binary16 bits, round to nearest even (the data is well inside fp16's range). */
function toHalf(f32: Float32Array, out: Uint16Array): void {
  const u32 = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
  for (let i = 0; i < f32.length; i++) {
    const x = u32[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = ((x >>> 23) & 0xff) - 127 + 15;
    let mant = x & 0x7fffff;
    if (exp <= 0) {
      if (exp < -10) {
        out[i] = sign;
        continue;
      }
      mant = (mant | 0x800000) >>> (1 - exp);
      out[i] = sign | ((mant + 0x1000) >>> 13);
    } else if (exp >= 31) {
      out[i] = sign | 0x7c00;
    } else {
      const h = sign | (exp << 10) | (mant >>> 13);
      const rest = mant & 0x1fff;
      out[i] = rest > 0x1000 || (rest === 0x1000 && h & 1) ? h + 1 : h;
    }
  }
}

/** The 768-d data set: base rows in a raw fp16 file (made once), queries in memory. */
function loadData(rows: number): { file: string; queries: Float32Array; nq: number; makeSeconds: number } {
  const ds = new SyntheticDataset({ dim: LOAD_DIM, intrinsicDim: 32, clusters: 256, seed: 768 });
  const file = join(tmpdir(), `dfaiss-scale-${rows}x${LOAD_DIM}-fp16.bin`);
  const nq = 200;
  const queries = ds.queries(nq);
  const want = rows * LOAD_DIM * 2;
  let makeSeconds = 0;
  if (!existsSync(file) || statSync(file).size !== want) {
    const t0 = nowMs();
    log(`writing ${rows} x ${LOAD_DIM} fp16 to ${file} (${(want / 1e9).toFixed(2)} GB, once)`);
    const fd = openSync(file, 'w');
    const chunk = 8192;
    const half = new Uint16Array(chunk * LOAD_DIM);
    for (let r = 0; r < rows; r += chunk) {
      const n = Math.min(chunk, rows - r);
      const f = ds.base(n, r);
      toHalf(f, half);
      writeSync(fd, half, 0, n * LOAD_DIM * 2);
    }
    closeSync(fd);
    makeSeconds = (nowMs() - t0) / 1000;
  }
  return { file, queries, nq, makeSeconds };
}

/** Exact top-10 (L2) of the queries over the fp16 file, streamed in 100k-row chunks; cached beside the file. */
async function exactTruth(file: string, rows: number, queries: Float32Array, nq: number): Promise<BigInt64Array> {
  const cache = `${file}.truth-${nq}.bin`;
  if (existsSync(cache)) return new BigInt64Array(new Uint8Array(execFileSync('cat', [cache], { maxBuffer: 1 << 30 })).buffer);
  setOmpNumThreads(2);
  const chunk = 100_000;
  const best: Array<Array<[number, bigint]>> = Array.from({ length: nq }, () => []);
  const fd = openSync(file, 'r');
  const half = new Uint16Array(chunk * LOAD_DIM);
  const f32 = new Float32Array(chunk * LOAD_DIM);
  try {
    for (let r = 0; r < rows; r += chunk) {
      const n = Math.min(chunk, rows - r);
      readSync(fd, half, 0, n * LOAD_DIM * 2, r * LOAD_DIM * 2);
      fp16ToFp32(half.subarray(0, n * LOAD_DIM), f32.subarray(0, n * LOAD_DIM));
      const flat = FaissIndex.fromFactory(LOAD_DIM, 'Flat', 'l2');
      await flat.add(f32.subarray(0, n * LOAD_DIM));
      const res = await flat.search(queries, K);
      for (let q = 0; q < nq; q++) {
        for (let j = 0; j < K; j++) best[q]!.push([res.distances[q * K + j]!, BigInt(r) + res.labels[q * K + j]!]);
        best[q]!.sort((a, b) => a[0] - b[0]);
        best[q]!.length = K;
      }
    }
  } finally {
    closeSync(fd);
  }
  const out = new BigInt64Array(nq * K);
  best.forEach((row, q) => row.forEach(([, id], j) => (out[q * K + j] = id)));
  writeFileSync(cache, new Uint8Array(out.buffer));
  return out;
}

interface LoadRow {
  type: string;
  servers: number;
  rows: number;
  trainRows: number;
  /** First `dfaiss load` (rows 0..trainRows, through training): seconds until TRAINED. */
  firstLoad: { sendSeconds: number; untilTrainedSeconds: number; totalSeconds: number };
  /** Second load into the trained index (--append). */
  trainedAdd: { rows: number; seconds: number; vecPerSec: number; mbPerSec: number };
  /** Server CPU seconds summed over both loads. */
  serverCpuSeconds: number;
  recall: Array<{ param: string; value: number; recallAt10: number; p50Ms: number }>;
  rssMiBPerServer: number[];
  peakRssMiBPerServer: number[];
}

function cfgFor(type: string, trainNum: number): Record<string, unknown> {
  const common = { dim: LOAD_DIM, metric: 'l2', train_num: trainNum };
  if (type === 'knnlm') return { index_builder_type: 'knnlm', centroids: 1024, code_size: 64, nprobe: 16, ...common };
  if (type === 'ivfsq') return { index_builder_type: 'ivfsq', centroids: 1024, nprobe: 16, ...common };
  return { index_builder_type: 'hnswsq', nprobe: 64, ...common };
}

function runCli(args: string[]): Promise<{ out: string; seconds: number }> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve({ out, seconds: (nowMs() - t0) / 1000 }) : reject(new Error(`dfaiss ${args[0]} exited ${code}: ${err.slice(-2000)}`))));
  });
}

function ddMBps(file: string): number {
  execFileSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=16M'], { stdio: 'ignore' }); // into the page cache
  const t0 = nowMs();
  execFileSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=16M'], { stdio: 'ignore' });
  return statSync(file).size / 1e6 / ((nowMs() - t0) / 1000);
}

async function loadCase(type: string, servers: number, file: string, rows: number, queries: Float32Array, nq: number, truth: BigInt64Array): Promise<LoadRow> {
  const trainRows = 200_000;
  const trainNum = 100_000;
  const cluster = await startCluster(servers, { threads: 1 });
  const dir = cluster.dir;
  try {
    const cfgPath = join(dir, `${type}.json`);
    writeFileSync(cfgPath, JSON.stringify(cfgFor(type, trainNum)));
    const common = ['--discover', cluster.discovery, '--mmap', file, '--dstore-fp16', '--dimension', String(LOAD_DIM), '--index-id', type, '--bs', '5000', '--json', '--no-save'];
    cluster.startSampling();
    const cpu0 = serversCpuSeconds(cluster);
    log(`${type}: loading rows 0..${trainRows} (training on ${trainNum})`);
    const first = JSON.parse((await runCli(['load', ...common, '--cfg', cfgPath, '--limit', String(trainRows)])).out.trim().split('\n').pop()!);
    log(`${type}: trained after ${first.trainSeconds.toFixed(1)} s; loading rows ${trainRows}..${rows} into the trained index`);
    const client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 600_000, sharedQuantize: 'never' });
    const recall: LoadRow['recall'] = [];
    let secondSeconds = 0;
    let serverCpuSeconds = 0;
    try {
      // Acknowledged is not yet searchable everywhere (a shard may add in the background):
      // the trained add rate counts until every row is in the servers' FAISS indexes.
      const t0 = nowMs();
      await runCli(['load', ...common, '--cfg', cfgPath, '--start', String(trainRows), '--append']);
      for (let i = 0; i < 36_000 && (await client.getNtotal(type)) < rows; i++) await new Promise((r) => setTimeout(r, 50));
      secondSeconds = (nowMs() - t0) / 1000;
      serverCpuSeconds = serversCpuSeconds(cluster) - cpu0;
      cluster.stopSampling();
      const param = type === 'hnswsq' ? 'efSearch' : 'nprobe';
      for (const value of type === 'hnswsq' ? [16, 64, 256] : [4, 16, 64]) {
        const found = new BigInt64Array(nq * K).fill(-1n);
        const lat: number[] = [];
        for (let q = 0; q < nq; q++) {
          const t = nowMs();
          const r = await client.search(type, queries.subarray(q * LOAD_DIM, (q + 1) * LOAD_DIM), K, { params: { [param]: value } });
          lat.push(nowMs() - t);
          r.metadata[0]!.forEach((m, j) => (found[q * K + j] = BigInt(m as number)));
        }
        let hits = 0;
        for (let q = 0; q < nq; q++) {
          const want = new Set(Array.from(truth.subarray(q * K, (q + 1) * K)));
          for (let j = 0; j < K; j++) if (want.has(found[q * K + j]!)) hits++;
        }
        recall.push({ param, value, recallAt10: hits / (nq * K), p50Ms: latencyStats(lat).p50 });
      }
    } finally {
      await client.close();
    }
    const mem = cluster.memory();
    return {
      type,
      servers,
      rows,
      trainRows,
      firstLoad: { sendSeconds: first.addSeconds, untilTrainedSeconds: first.trainSeconds + first.addSeconds, totalSeconds: first.totalSeconds },
      trainedAdd: { rows: rows - trainRows, seconds: secondSeconds, vecPerSec: (rows - trainRows) / secondSeconds, mbPerSec: ((rows - trainRows) * LOAD_DIM * 2) / 1e6 / secondSeconds },
      serverCpuSeconds,
      recall,
      rssMiBPerServer: mem.map((m) => m.rssBytes / MiB),
      peakRssMiBPerServer: mem.map((m) => m.peakRssBytes / MiB),
    };
  } finally {
    await cluster.stop();
  }
}

interface SingleLoadRow {
  type: string;
  trainMode: 'shared' | 'per-shard';
  servers: number;
  rows: number;
  sendSeconds: number;
  /** From the load's start until the index was TRAINED (what issue 15 measured: 367 s). */
  untilTrainedSeconds: number;
  /** Until every row was in the servers' FAISS indexes. */
  untilSearchableSeconds: number;
  serverCpuSeconds: number;
  peakRssMiBPerServer: number[];
  load: number[];
}

/** One `dfaiss load` of all rows into a fresh cluster, as a user runs it. */
async function singleLoad(type: string, trainMode: 'shared' | 'per-shard', servers: number, file: string, rows: number): Promise<SingleLoadRow> {
  const cluster = await startCluster(servers, { threads: 1 });
  try {
    const cfgPath = join(cluster.dir, `${type}.json`);
    writeFileSync(cfgPath, JSON.stringify({ ...cfgFor(type, 100_000), train_mode: trainMode }));
    const cpu0 = serversCpuSeconds(cluster);
    const t0 = nowMs();
    log(`${type} (${trainMode}): one load of ${rows} rows`);
    const r = JSON.parse((await runCli(['load', '--discover', cluster.discovery, '--mmap', file, '--dstore-fp16', '--dimension', String(LOAD_DIM), '--index-id', type, '--bs', '5000', '--json', '--no-save', '--cfg', cfgPath])).out.trim().split('\n').pop()!);
    const untilTrainedSeconds = (nowMs() - t0) / 1000;
    const client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 600_000 });
    try {
      for (let i = 0; i < 72_000 && (await client.getNtotal(type)) < rows; i++) await new Promise((res) => setTimeout(res, 50));
    } finally {
      await client.close();
    }
    const row: SingleLoadRow = {
      type,
      trainMode,
      servers,
      rows,
      sendSeconds: r.addSeconds,
      untilTrainedSeconds,
      untilSearchableSeconds: (nowMs() - t0) / 1000,
      serverCpuSeconds: serversCpuSeconds(cluster) - cpu0,
      peakRssMiBPerServer: cluster.memory().map((m) => m.peakRssBytes / MiB),
      load: loadavg(),
    };
    log(`${type} (${trainMode}): sent after ${fmt(row.sendSeconds)} s, TRAINED after ${fmt(row.untilTrainedSeconds)} s, searchable after ${fmt(row.untilSearchableSeconds)} s, server CPU ${fmt(row.serverCpuSeconds)} s`);
    return row;
  } finally {
    await cluster.stop();
  }
}

// ---------------------------------------------------------------------------------------

function markdown(r: { fanout: FanoutRow[]; quantizer: QuantizerShare[]; loads: LoadRow[]; singleLoads: SingleLoadRow[]; ddMBps: number | null; meta: Record<string, unknown> & { options: ScaleOptions } }): string {
  const n = r.meta.options.fanoutN;
  const L: string[] = [`# dfaiss scale benchmark (${r.meta.date})`, '', `commit ${r.meta.commit}, ${r.meta.cpus} cores, load average before ${r.meta.loadBefore}`, ''];
  if (r.fanout.length) {
    L.push(`## Fan-out: ${n.toLocaleString('en-US')} x ${FANOUT_DIM} IVF${NLIST},Flat nprobe ${NPROBE}, spread over S servers (1 thread each, ${r.meta.options.ranksPerProcess} per process)`, '');
    L.push('| S | b1 p50 ms | b1 p99 ms | b100 QPS | client CPU ms / b1 | server CPU ms / b1 (all) | client CPU ms / b100 | server CPU ms / b100 (all) | tiny RPC to all p50 ms | RSS idle MiB | RSS loaded MiB |');
    L.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const f of r.fanout) {
      L.push(`| ${f.servers} | ${fmt(f.b1.p50)} | ${fmt(f.b1.p99)} | ${fmt(f.b100Qps)} | ${fmt(f.clientCpuMsB1)} | ${fmt(f.serverCpuMsB1)} | ${fmt(f.clientCpuMsB100)} | ${fmt(f.serverCpuMsB100)} | ${fmt(f.tiny.p50)} | ${fmt(f.idleRssMiB)} | ${fmt(f.loadedRssMiB)} |`);
    }
    L.push('');
    L.push('### Quantized once (one server finds the probe lists, every shard searches them; same cluster, interleaved)', '');
    L.push('| S | same hits | b100 QPS without / with | client CPU ms / b100 without / with | server CPU ms / b100 (all) without / with | b1: client + server CPU ms without / with | b1 mean ms with | load avg (1 min) |');
    L.push('|---:|---|---:|---:|---:|---:|---:|---:|');
    for (const f of r.fanout) {
      const q = f.quantizeOnce;
      L.push(
        `| ${f.servers} | ${q.identical ? 'yes' : 'NO'} | ${fmt(f.b100Qps)} / ${fmt(q.b100Qps)} | ${fmt(f.clientCpuMsB100)} / ${fmt(q.clientCpuMsB100)} | ${fmt(f.serverCpuMsB100)} / ${fmt(q.serverCpuMsB100)} | ` +
          `${fmt(f.clientCpuMsB1 + f.serverCpuMsB1)} / ${fmt(q.b1.clientCpuMs + q.b1.serverCpuMs)} | ${fmt(q.b1.meanMs)} | ${q.loadAvg.toFixed(1)} |`,
      );
    }
    L.push('');
  }
  if (r.quantizer.length) {
    L.push('## Coarse quantizer share of one shard\'s batch-100 search (in-process, 1 thread)', '');
    L.push('| S | shard share | shard b100 search ms | quantizer ms | quantizer share | repeated quantizer work at S (ms of CPU per b100) | shard b100 search given the lists ms | saved at S (ms of CPU per b100) |');
    L.push('|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const q of r.quantizer) {
      L.push(
        `| ${q.servers} | ${Math.floor(n / q.servers).toLocaleString('en-US')} | ${fmt(q.shardSearchMs)} | ${fmt(q.quantizerMs)} | ${((100 * q.quantizerMs) / q.shardSearchMs).toFixed(0)}% | ${fmt((q.servers - 1) * q.quantizerMs)} | ` +
          `${fmt(q.preassignedMs)} | ${fmt(q.servers * (q.shardSearchMs - q.preassignedMs) - q.quantizerMs)} |`,
      );
    }
    L.push('');
  }
  if (r.loads.length) {
    L.push(`## 768-d fp16 loads (\`dfaiss load --dstore-fp16\`, ${r.loads[0]!.rows.toLocaleString('en-US')} rows, ${r.loads[0]!.servers} servers x 1 thread)`, '');
    L.push(`\`dd\` of the file from the page cache: ${fmt(r.ddMBps)} MB/s.`, '');
    L.push('| type | first 200k rows until TRAINED s | trained add vec/s | trained add MB/s (fp16) | server CPU s | recall@10 (param: value) | b1 p50 ms | RSS per server MiB (mean / max peak) |');
    L.push('|---|---:|---:|---:|---:|---|---|---:|');
    for (const l of r.loads) {
      const rec = l.recall.map((x) => `${x.param} ${x.value}: ${x.recallAt10.toFixed(3)}`).join('; ');
      const lat = l.recall.map((x) => fmt(x.p50Ms)).join(' / ');
      const mean = l.rssMiBPerServer.reduce((a, b) => a + b, 0) / l.rssMiBPerServer.length;
      L.push(`| ${l.type} | ${fmt(l.firstLoad.untilTrainedSeconds)} | ${fmt(l.trainedAdd.vecPerSec)} | ${fmt(l.trainedAdd.mbPerSec)} | ${fmt(l.serverCpuSeconds)} | ${rec} | ${lat} | ${fmt(mean)} / ${fmt(Math.max(...l.peakRssMiBPerServer))} |`);
    }
    L.push('');
  }
  if (r.singleLoads.length) {
    L.push(`## One \`dfaiss load\` of every row (the issue's procedure), ${r.singleLoads[0]!.servers} servers x 1 thread, trainNum 100,000`, '');
    L.push('| type | train mode | rows | sending s | until TRAINED s | until searchable s | server CPU s | peak RSS per server MiB (max) | load (1 min) at end |');
    L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|');
    for (const l of r.singleLoads) {
      L.push(`| ${l.type} | ${l.trainMode} | ${l.rows.toLocaleString('en-US')} | ${fmt(l.sendSeconds)} | ${fmt(l.untilTrainedSeconds)} | ${fmt(l.untilSearchableSeconds)} | ${fmt(l.serverCpuSeconds)} | ${fmt(Math.max(...l.peakRssMiBPerServer))} | ${l.load[0]!.toFixed(1)} |`);
    }
    L.push('');
  }
  return `${L.join('\n')}\n`;
}

export async function runScale(argv: string[]): Promise<void> {
  const o = parse(argv);
  const meta: Record<string, unknown> & { options: ScaleOptions } = {
    date: new Date().toISOString(),
    commit: (() => {
      try {
        return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
      } catch {
        return 'unknown';
      }
    })(),
    cpus: cpus().length,
    loadBefore: loadavg().map((x) => x.toFixed(2)).join(' '),
    options: o,
  };
  const fanout: FanoutRow[] = [];
  let quantizer: QuantizerShare[] = [];
  const loads: LoadRow[] = [];
  const singleLoads: SingleLoadRow[] = [];
  let dd: number | null = null;
  if (o.fanout) {
    const ds = new SyntheticDataset({ dim: FANOUT_DIM, seed: 1234 });
    const base = ds.base(o.fanoutN);
    const queries = ds.queries(1000);
    quantizer = await quantizerShares(base, queries, o.servers);
    for (const s of o.servers) {
      log(`fan-out: ${s} servers`);
      const row = await fanoutCase(s, base, queries, o.fanoutN, o.ranksPerProcess);
      log(`fan-out: ${s} servers: b1 p50 ${fmt(row.b1.p50)} ms, b100 ${fmt(row.b100Qps)} QPS, server CPU ${fmt(row.serverCpuMsB1)} ms per b1`);
      fanout.push(row);
    }
  }
  if (o.load) {
    const data = loadData(o.loadRows);
    meta.makeSeconds = data.makeSeconds;
    dd = ddMBps(data.file);
    log(`dd from the page cache: ${fmt(dd)} MB/s; exact top-${K} of ${data.nq} queries`);
    const truth = await exactTruth(data.file, o.loadRows, data.queries, data.nq);
    for (const t of o.types) {
      for (const mode of o.singleLoad) singleLoads.push(await singleLoad(t, mode, o.loadServers, data.file, o.loadRows));
      if (o.singleLoad.length) continue;
      const row = await loadCase(t, o.loadServers, data.file, o.loadRows, data.queries, data.nq, truth);
      log(`${t}: trained add ${fmt(row.trainedAdd.vecPerSec)} vec/s (${fmt(row.trainedAdd.mbPerSec)} MB/s); recall ${row.recall.map((x) => x.recallAt10.toFixed(3)).join(' / ')}`);
      loads.push(row);
    }
  }
  meta.loadAfter = loadavg().map((x) => x.toFixed(2)).join(' ');
  mkdirSync(o.out, { recursive: true });
  const result = { meta, fanout, quantizer, loads, singleLoads, ddMBps: dd };
  writeFileSync(join(o.out, `${o.name}.json`), `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(join(o.out, `${o.name}.md`), markdown(result));
  process.stdout.write(markdown(result));
}
