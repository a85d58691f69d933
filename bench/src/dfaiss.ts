/**
 * The dfaiss side: SERVERS fresh `dfaiss server` processes (1 thread each, PASSIVE), one
 * IndexClient in this process, metadata = the global row number of each vector.
 *
 * Ingest is timed from the first addIndexData until every shard is TRAINED and the summed
 * ntotal equals n. All batches are issued at once; IndexClient bounds the adds in flight.
 */
import { IndexClient } from '../../dist/client/index-client.js';
import type { IndexCfg } from '../../dist/config/index.js';
import { startCluster, type ProcMemory } from './cluster.js';
import { monoUs, nowMs, sleep } from './stats.js';
import {
  IVF_CENTROIDS,
  IVF_NPROBE,
  K,
  SERVERS,
  batchRows,
  measureSearch,
  numBatches,
  type Dataset,
  type IndexKind,
  type SearchCounts,
  type SearchMeasurements,
} from './workload.js';

export interface ServerMemory extends ProcMemory {
  rank: number;
  /** rssBytes from the status RPC once ingest finished. */
  statusRssBytes: number;
  /** Vectors this server holds. */
  ntotal: number;
  /** Raw float32 bytes of those vectors plus their packed metadata and u32 offsets. */
  dataBytes: number;
}

export interface DfaissResult extends SearchMeasurements {
  side: 'dfaiss';
  threads: string;
  cfg: Partial<IndexCfg>;
  ingest: {
    /** The measured run (the last one): first add until searchable. */
    seconds: number;
    /** Median over all repetitions. */
    vecPerSec: number;
    /** vec/s of every repetition (the last one is the measured run). */
    runs: number[];
    /** Until every addIndexData call resolved. */
    sendSeconds: number;
    /** Until every shard left NOT_TRAINED/TRAINING (IVF: k-means done). */
    trainedSeconds: number;
    /** Polls of status() while waiting (each one RPC per server). */
    polls: number;
    /**
     * After ingest, until the servers went idle (background work such as the post-training
     * snapshot); searches are measured after that. NaN with settle disabled.
     */
    settleSeconds: number;
  };
  servers: ServerMemory[];
  /** CPU seconds all our servers used (ingest repetitions included), start to end of measurements. */
  serverCpuSeconds: number;
}

export interface DfaissOptions {
  /** Extra node flags for the servers (profiling). */
  serverNodeArgs?: string[];
  /** Status poll period while waiting for ingest to finish. @default 10 */
  pollMs?: number;
  /** Ingest repetitions (fresh cluster each); the median is reported. @default 1 */
  ingestReps?: number;
  /** Wait for the servers to go idle after ingest before searching. @default true */
  settle?: boolean;
}

/**
 * Waits until the servers' summed CPU use stays below 2% of one core for two 500 ms windows
 * in a row (or maxSeconds pass); returns the seconds waited.
 */
async function settle(cpu: () => number, maxSeconds: number): Promise<number> {
  const t0 = nowMs();
  let prev = cpu();
  let quiet = 0;
  while (quiet < 2 && nowMs() - t0 < maxSeconds * 1000) {
    await sleep(500);
    const c = cpu();
    quiet = c - prev < 0.01 ? quiet + 1 : 0;
    prev = c;
  }
  return (nowMs() - t0) / 1000 - 1; // the last two quiet windows are not background work
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** msgpack size of a non-negative integer row number. */
function msgpackUintBytes(v: number): number {
  if (v < 128) return 1;
  if (v < 256) return 2;
  if (v < 65536) return 3;
  return 5;
}

export function indexCfg(ds: Dataset, kind: IndexKind): Partial<IndexCfg> {
  return kind === 'flat'
    ? // trainNum = one batch: each shard creates its Flat index on its first batch, then adds as data arrives.
      { indexBuilderType: 'flat', dim: ds.dim, metric: 'l2', trainNum: ds.batch }
    : // Shared training: one k-means on trainPerShard rows drawn across shards (as the limit),
      // starting once the cluster holds that many, so it overlaps the rest of the ingest.
      { indexBuilderType: 'ivf_simple', dim: ds.dim, metric: 'l2', centroids: IVF_CENTROIDS, nprobe: IVF_NPROBE, trainNum: ds.trainPerShard, trainMode: 'shared' };
}

interface IngestTiming {
  seconds: number;
  sendSeconds: number;
  trainedSeconds: number;
  polls: number;
  us: [number, number];
}

type Batches = Array<{ vectors: Float32Array; meta: number[] }>;

/** Sends every batch at once, then polls status() until every shard is TRAINED and holds its share. */
async function ingestOnce(client: IndexClient, id: string, n: number, batches: Batches, pollMs: number): Promise<IngestTiming> {
  const startUs = monoUs();
  const t0 = nowMs();
  await Promise.all(batches.map((b) => client.addIndexData(id, b.vectors, b.meta)));
  const sendSeconds = (nowMs() - t0) / 1000;
  let trainedSeconds = NaN;
  let polls = 0;
  for (;;) {
    const st = await client.status();
    polls++;
    const infos = st.map((s) => (s.indexes as Record<string, { state: string; ntotal: number }>)[id]!);
    if (Number.isNaN(trainedSeconds) && infos.every((i) => i.state === 'TRAINED' || i.state === 'ADD')) trainedSeconds = (nowMs() - t0) / 1000;
    const ntotal = infos.reduce((a, i) => a + i.ntotal, 0);
    if (infos.every((i) => i.state === 'TRAINED') && ntotal === n) break;
    await sleep(pollMs);
  }
  return { seconds: (nowMs() - t0) / 1000, sendSeconds, trainedSeconds, polls, us: [startUs, monoUs()] };
}

export async function runDfaiss(ds: Dataset, kind: IndexKind, counts: SearchCounts, log: (msg: string) => void, opts: DfaissOptions = {}): Promise<DfaissResult> {
  const id = `bench-${ds.name}-${kind}`;
  const cfg = indexCfg(ds, kind);
  const clusterOpts = { threads: 1, ...(opts.serverNodeArgs ? { nodeArgs: opts.serverNodeArgs } : {}) };
  // Metadata is user data: built before the clock starts.
  const batches: Batches = Array.from({ length: numBatches(ds) }, (_, b) => {
    const { vectors, first, rows } = batchRows(ds, b);
    return { vectors, meta: Array.from({ length: rows }, (_, i) => first + i) };
  });

  // Extra ingest-only repetitions, each on a fresh cluster (an ingest is a few seconds, so
  // one disk flush or busy moment moves a single figure a lot): the median is reported.
  const runs: number[] = [];
  let repCpuSeconds = 0;
  for (let r = 1; r < (opts.ingestReps ?? 1); r++) {
    const c = await startCluster(SERVERS, clusterOpts);
    try {
      const client = await IndexClient.connect(c.discovery);
      try {
        await client.createIndex(id, cfg);
        const t = await ingestOnce(client, id, ds.n, batches, opts.pollMs ?? 10);
        runs.push(ds.n / t.seconds);
        log(`dfaiss ${kind}: ingest repetition ${r}: ${ds.n} in ${t.seconds.toFixed(2)} s`);
      } finally {
        await client.close();
      }
    } finally {
      const mem = await c.stop({ graceful: opts.serverNodeArgs !== undefined });
      repCpuSeconds += mem.reduce((a, x) => a + x.cpuSeconds, 0);
    }
  }

  const cluster = await startCluster(SERVERS, clusterOpts);
  try {
    const client = await IndexClient.connect(cluster.discovery);
    try {
      await client.createIndex(id, cfg);
      cluster.startSampling();
      const t = await ingestOnce(client, id, ds.n, batches, opts.pollMs ?? 10);
      const { seconds, sendSeconds, trainedSeconds, polls } = t;
      runs.push(ds.n / seconds);
      const ingestUs = t.us;
      // Memory peaks during ingest and training; no /proc sampling timer during the searches.
      cluster.memory();
      cluster.stopSampling();
      log(`dfaiss ${kind}: ingested ${ds.n} in ${seconds.toFixed(2)} s (sent ${sendSeconds.toFixed(2)} s, trained ${trainedSeconds.toFixed(2)} s)`);
      const settleSeconds = opts.settle === false ? NaN : await settle(() => cluster.memory().reduce((a, m) => a + m.cpuSeconds, 0), 120);
      if (settleSeconds > 0.5) log(`dfaiss ${kind}: servers busy for ${settleSeconds.toFixed(1)} s after ingest (background work), searching after that`);

      const status = await client.status();
      const m = await measureSearch(
        ds,
        {
          search: (q) => client.search(id, q, K),
          ids: (raw, nq) => {
            const meta = (raw as { metadata: unknown[][] }).metadata;
            const out = new Int32Array(nq * K).fill(-1);
            for (let q = 0; q < nq; q++) meta[q]!.forEach((v, r) => (out[q * K + r] = v as number));
            return out;
          },
        },
        counts,
      );

      // VmHWM only grows: read after the last search, it is the peak of the whole run.
      const mem: ProcMemory[] = cluster.memory();
      const servers: ServerMemory[] = status.map((s, i) => {
        const info = (s.indexes as Record<string, { ntotal: number }>)[id]!;
        return {
          rank: s.rank as number,
          ...mem[i]!,
          statusRssBytes: s.rssBytes as number,
          ntotal: info.ntotal,
          dataBytes: 0,
        };
      });
      // What each server must hold at least: its vectors as float32, plus their metadata as
      // it travels (msgpack of the row number + a u32 offset per vector).
      let metaBytes = 0;
      for (let r = 0; r < ds.n; r++) metaBytes += msgpackUintBytes(r) + 4;
      for (const s of servers) s.dataBytes = s.ntotal * ds.dim * 4 + (metaBytes / ds.n) * s.ntotal;

      return {
        side: 'dfaiss',
        threads: `${SERVERS} servers x 1 thread`,
        cfg,
        ingest: { seconds, vecPerSec: median(runs), runs, sendSeconds, trainedSeconds, polls, settleSeconds },
        servers,
        serverCpuSeconds: repCpuSeconds + mem.reduce((a, x) => a + x.cpuSeconds, 0),
        ...m,
        marksUs: { ingest: ingestUs, ...m.marksUs },
      };
    } finally {
      await client.close();
    }
  } finally {
    await cluster.stop({ graceful: opts.serverNodeArgs !== undefined });
  }
}
