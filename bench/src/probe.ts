/**
 * Probes that split the benchmark's gaps into their parts (bench/results/ANALYSIS.md):
 *
 *   node bench/dist/probe.js [overhead] [search-parts] [ingest-parts] [ingest-modes] [ivf-trainnum] [topology] [blas] [train] [memory] [--out FILE]
 *
 * - overhead:     fixed cost of one call: in-process search vs. trivial RPC and search on a
 *                 tiny index through 1, 2 and 4 servers (p50/p99 over 2000 calls).
 * - search-parts: CPU cost of each step of one batch-1 search (frames, zod, merge, metadata,
 *                 the FAISS call and its libuv hop), in-process.
 * - ingest-parts: main-thread cost of each step a 5000 x 128 batch goes through (client and
 *                 server), WAL write + fdatasync, FAISS add; per batch and per 500k vectors.
 * - ingest-modes: dfaiss Flat ingest of 500k x 128 with durability fsync / os / none and
 *                 more adds in flight.
 * - ivf-trainnum: dfaiss IVF ingest with per-shard trainNum 125k (the share) / 64k / 40k.
 * - topology:     2 servers (one per core) vs 4, Flat and IVF: batch-1 p50/p99, batch-100 QPS.
 * - blas:         Flat search QPS at batch 1..100 on one server's share, both sides of FAISS's
 *                 switch to sgemm at 20 queries.
 * - train:        IVF1024 k-means on 125k / 64k / 40k rows (2 threads), and 4 concurrent
 *                 1-thread trainings on 125k (what 4 servers with per-shard training do).
 * - memory:       RSS of an idle server, and after holding 125k x 128 Flat.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { IndexClientOptions } from '../../dist/client/api.js';
import { IndexClient } from '../../dist/client/index-client.js';
import type { IndexCfg } from '../../dist/config/index.js';
import { SyntheticDataset } from '../../dist/datasets/synthetic.js';
import { FaissIndex, setOmpNumThreads, toMatrix } from '../../dist/native/index.js';
import { encodeMetadata, validateMetadata } from '../../dist/protocol/metadata.js';
import { InMemoryMetadataStore } from '../../dist/shard/metadata-store.js';
import { WriteAheadLog, type Durability } from '../../dist/shard/wal.js';
import { procMemory, startCluster } from './cluster.js';
import { fmt, latencyStats, nowMs, sleep, type LatencyStats } from './stats.js';

const DIM = 128;
const log = (msg: string): void => void process.stderr.write(`[probe] ${msg}\n`);
const MiB = 1024 * 1024;

async function lat(n: number, fn: () => Promise<unknown>, warmup = 200): Promise<LatencyStats> {
  for (let i = 0; i < warmup; i++) await fn();
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = nowMs();
    await fn();
    xs.push((nowMs() - t0) * 1000);
  }
  return latencyStats(xs); // µs
}

async function waitReady(c: IndexClient, id: string, n: number): Promise<void> {
  for (;;) {
    const st = await c.status();
    const infos = st.map((s) => (s.indexes as Record<string, { state: string; ntotal: number } | undefined>)[id]).filter((x) => x !== undefined);
    if (infos.every((i) => i.state === 'TRAINED') && infos.reduce((a, i) => a + i.ntotal, 0) === n) return;
    await sleep(5);
  }
}

/** The bench's synthetic data (seed 1234): n rows in batches of `batch`, metadata = row number. */
function syntheticBatches(n: number, batch: number): { data: SyntheticDataset; batches: Array<{ vectors: Float32Array; meta: number[] }> } {
  const data = new SyntheticDataset({ dim: DIM, seed: 1234 });
  const base = data.base(n);
  const batches = Array.from({ length: n / batch }, (_, b) => ({
    vectors: base.subarray(b * batch * DIM, (b + 1) * batch * DIM),
    meta: Array.from({ length: batch }, (_, i) => b * batch + i),
  }));
  return { data, batches };
}

/** A fresh cluster of `servers` and a client on it for `fn`; both stopped afterwards. */
async function withCluster(servers: number, clientOpts: IndexClientOptions, fn: (client: IndexClient) => Promise<void>): Promise<void> {
  const cluster = await startCluster(servers, { threads: 1 });
  const client = await IndexClient.connect(cluster.discovery, clientOpts);
  try {
    await fn(client);
  } finally {
    await client.close();
    await cluster.stop();
  }
}

async function overhead(): Promise<Record<string, LatencyStats>> {
  const data = new SyntheticDataset({ dim: DIM, seed: 7 });
  const q = data.queries(1);
  const out: Record<string, LatencyStats> = {};
  setOmpNumThreads(1);
  const local = FaissIndex.fromFactory(DIM, 'Flat', 'l2');
  await local.add(data.base(1000));
  out['in-process FaissIndex.search, Flat 1000, k=10'] = await lat(2000, () => local.search(q, 10));

  const cluster = await startCluster(4, { threads: 1 });
  const addrs = cluster.servers.map((s) => ({ host: '127.0.0.1', port: s.port }));
  const c4 = await IndexClient.connectTo(addrs);
  const c2 = await IndexClient.connectTo(addrs.slice(0, 2));
  const c1 = await IndexClient.connectTo(addrs.slice(0, 1));
  try {
    const cfg: Partial<IndexCfg> = { indexBuilderType: 'flat', dim: DIM, metric: 'l2', trainNum: 1 };
    await c4.createIndex('tiny', cfg);
    for (let b = 0; b < 4; b++) await c4.addIndexData('tiny', data.base(1000, b * 1000), Array.from({ length: 1000 }, (_, i) => b * 1000 + i));
    await waitReady(c4, 'tiny', 4000);
    for (const [name, c] of [['1 server', c1], ['2 servers', c2], ['4 servers', c4]] as const) {
      out[`getNtotal (trivial RPC), ${name}`] = await lat(2000, () => c.getNtotal('tiny'));
      out[`IndexClient.search, Flat 1000 per server, k=10, ${name}`] = await lat(2000, () => c.search('tiny', q, 10));
    }
  } finally {
    await Promise.all([c1.close(), c2.close(), c4.close()]);
    await cluster.stop();
  }
  return out;
}

async function ingestParts(): Promise<Record<string, number>> {
  const rows = 5000;
  const data = new SyntheticDataset({ dim: DIM, seed: 7 });
  const vectors = data.base(rows);
  const meta = Array.from({ length: rows }, (_, i) => 250_000 + i);
  const reps = 20;
  const time = async (fn: () => unknown): Promise<number> => {
    await fn();
    const t0 = nowMs();
    for (let i = 0; i < reps; i++) await fn();
    return (nowMs() - t0) / reps;
  };
  const enc = encodeMetadata(meta, rows);
  const out: Record<string, number> = {};
  out['client: toMatrix (finite check)'] = await time(() => toMatrix(vectors, DIM, 'v'));
  out['client: encodeMetadata (5000 ints)'] = await time(() => encodeMetadata(meta, rows));
  out['server: validateMetadata (decode each item)'] = await time(() => validateMetadata(enc.blob, enc.offsets, rows));
  out['server: vectors.slice() (owned copy)'] = await time(() => vectors.slice());
  out['server: toMatrix (finite check), x2 on the path'] = 2 * (await time(() => toMatrix(vectors, DIM, 'v')));
  out['server: blob + offsets slice'] = await time(() => [enc.blob.slice(), enc.offsets.slice()]);
  out['server: WAL crc32 of the record'] = await time(() => crc32(new Uint8Array(vectors.buffer)));
  const store = new InMemoryMetadataStore();
  out['server: MetadataStore.append'] = await time(() => store.append(enc.blob, enc.offsets));

  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-probe-wal-'));
  try {
    for (const mode of ['fsync', 'os'] as Durability[]) {
      const wal = await WriteAheadLog.open(join(dir, mode), mode, 0);
      const batch = { vectors, dim: DIM, blob: enc.blob, offsets: enc.offsets, key: '' };
      out[`server: WAL append, ${mode}, one batch at a time (wall)`] = await time(() => wal.append(batch, () => 0));
      // 8 in flight: group commit shares the write + fdatasync.
      out[`server: WAL append, ${mode}, 8 in flight (wall per batch)`] = (await time(() => Promise.all(Array.from({ length: 8 }, () => wal.append(batch, () => 0))))) / 8;
      await wal.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  setOmpNumThreads(1);
  const flat = FaissIndex.fromFactory(DIM, 'Flat', 'l2');
  out['FAISS Flat add (worker thread, wall)'] = await time(() => flat.add(vectors));
  return out;
}

async function ingestModes(): Promise<Record<string, number>> {
  const n = 500_000;
  const batch = 5000;
  const { batches } = syntheticBatches(n, batch);
  const out: Record<string, number> = {};
  const variants: Array<{ name: string; durability: Durability; inFlight?: number }> = [
    { name: 'durability fsync (default), 8 in flight (default)', durability: 'fsync' },
    { name: 'durability os, 8 in flight', durability: 'os' },
    { name: 'durability none, 8 in flight', durability: 'none' },
    { name: 'durability fsync, 32 in flight', durability: 'fsync', inFlight: 32 },
  ];
  // Interleaved repetitions (3 rounds over all variants): each ingest is only 1-3 s, so one
  // busy moment on the machine moves a single figure a lot. Reported: the median.
  const runs = new Map<string, number[]>();
  for (let round = 0; round < 3; round++) {
    for (const v of variants) {
      await withCluster(4, v.inFlight ? { maxAddsInFlight: v.inFlight } : {}, async (client) => {
        await client.createIndex('ing', { indexBuilderType: 'flat', dim: DIM, metric: 'l2', trainNum: batch, durability: v.durability });
        const t0 = nowMs();
        await Promise.all(batches.map((b) => client.addIndexData('ing', b.vectors, b.meta)));
        await waitReady(client, 'ing', n);
        const r = n / ((nowMs() - t0) / 1000);
        runs.set(v.name, [...(runs.get(v.name) ?? []), r]);
        log(`${v.name}: ${Math.round(r)} vec/s (load ${loadavg()[0]!.toFixed(2)})`);
      });
    }
  }
  for (const [name, xs] of runs) out[`${name} [${xs.map((x) => Math.round(x / 1000)).join(', ')}k]`] = [...xs].sort((a, b) => a - b)[1]!;
  return out;
}

/**
 * Per-query CPU cost of each step of one batch-1 IVF search through 4 servers (k=10), timed
 * in-process, in µs: what the client does once, what each server does.
 */
async function searchParts(): Promise<Record<string, number>> {
  const { buildMethods } = await import('../../dist/server/methods.js');
  const { encodeFrame, decodeFrame } = await import('../../dist/protocol/frame.js');
  const { concatBytes, decodeMetadataItem, encodeMetadata: enc } = await import('../../dist/protocol/metadata.js');
  const { mergeQuery } = await import('../../dist/client/merge.js');
  const data = new SyntheticDataset({ dim: DIM, seed: 1234 });
  const out: Record<string, number> = {};
  const reps = 5000;
  const us = async (fn: () => unknown, n = reps): Promise<number> => {
    for (let i = 0; i < 200; i++) await fn();
    const t0 = nowMs();
    for (let i = 0; i < n; i++) await fn();
    return ((nowMs() - t0) * 1000) / n;
  };
  const q = data.queries(1);
  const methods = buildMethods({} as never) as unknown as Record<string, { schema: { parse(v: unknown): unknown } }>;
  const args = { indexId: 'bench-synthetic-ivf', k: 10 };
  out['server: zod parse of search args'] = await us(() => methods.search!.schema.parse(args));
  const req = encodeFrame({ v: 1, id: 7, method: 'search', args }, [q]);
  const reqBytes = concatBytes(req.parts, req.byteLength);
  out['client: encodeFrame (request)'] = await us(() => encodeFrame({ v: 1, id: 7, method: 'search', args }, [q]));
  out['server: decodeFrame (request)'] = await us(() => decodeFrame(reqBytes));
  // One server's reply: distances, labels, metadata blob + offsets of 10 hits.
  const m = enc(Array.from({ length: 10 }, (_, i) => 123_456 + i), 10);
  const dist = new Float32Array(10);
  const labels = BigInt64Array.from({ length: 10 }, (_, i) => BigInt(i));
  const reply = () => encodeFrame({ v: 1, id: 7, ok: true, result: { n: 1, k: 10, metric: 'l2', ntotal: 125000 } }, [dist, labels, m.blob, new Uint8Array(m.offsets.buffer)]);
  out['server: encodeFrame (reply)'] = await us(reply);
  const r = reply();
  const replyBytes = concatBytes(r.parts, r.byteLength);
  out['client: decodeFrame (one reply)'] = await us(() => decodeFrame(replyBytes));
  const items = Array.from({ length: 10 }, (_, i) => m.blob.subarray(m.offsets[i]!, m.offsets[i + 1]!));
  out['server: pack metadata of 10 hits'] = await us(() => concatBytes(items, m.blob.byteLength));
  const shards = Array.from({ length: 4 }, (_, s) => ({
    distances: Float32Array.from({ length: 10 }, (_, i) => i * 4 + s),
    labels,
    k: 10,
  }));
  out['client: mergeQuery, 4 shards x 10'] = await us(() => mergeQuery(shards, 0, 10, 'l2'));
  out['client: decode 10 metadata items'] = await us(() => items.map((b) => decodeMetadataItem(b)));
  setOmpNumThreads(1);
  const ivf = FaissIndex.fromFactory(DIM, 'IVF1024,Flat', 'l2');
  const share = data.base(125_000);
  await ivf.train(share);
  await ivf.add(share);
  await ivf.setParameter('nprobe', 16);
  out['server: FaissIndex.search IVF1024 nprobe 16, 125k, 1 query (worker thread, wall)'] = await us(() => ivf.search(q, 10), 2000);
  await ivf.setParameter('nprobe', 1);
  out['server: same with nprobe 1 (coarse quantizer + 1 list)'] = await us(() => ivf.search(q, 10), 2000);
  const centroids = FaissIndex.fromFactory(DIM, 'Flat', 'l2');
  await centroids.add(share.subarray(0, 1024 * DIM));
  out['server: FaissIndex.search Flat 1024 (the coarse quantizer alone, wall)'] = await us(() => centroids.search(q, 10), 2000);
  const half = FaissIndex.fromFactory(DIM, 'IVF1024,Flat', 'l2');
  await half.train(share);
  await half.add(data.base(250_000));
  await half.setParameter('nprobe', 16);
  out['2-shard floor: FaissIndex.search IVF1024 nprobe 16, 250k, 1 query (wall)'] = await us(() => half.search(q, 10), 2000);
  const tiny = FaissIndex.fromFactory(DIM, 'Flat', 'l2');
  await tiny.add(data.base(10));
  out['server: FaissIndex.search on a 10-vector Flat (the libuv hop + promise, wall)'] = await us(() => tiny.search(q, 10), 2000);
  return out;
}

/**
 * dfaiss IVF1024 ingest of 500k x 128 with per-shard training on fewer rows: training starts
 * as soon as a shard has trainNum rows (overlapping the send) and k-means costs ~linear in rows.
 */
async function ivfTrainNum(): Promise<Record<string, number>> {
  const n = 500_000;
  const batch = 5000;
  const { batches } = syntheticBatches(n, batch);
  const out: Record<string, number> = {};
  for (const trainNum of [125_000, 64_000, 40_000]) {
    await withCluster(4, {}, async (client) => {
      await client.createIndex('ivf', { indexBuilderType: 'ivf_simple', dim: DIM, metric: 'l2', centroids: 1024, nprobe: 16, trainNum, trainMode: 'per-shard' });
      const t0 = nowMs();
      await Promise.all(batches.map((b) => client.addIndexData('ivf', b.vectors, b.meta)));
      await waitReady(client, 'ivf', n);
      out[`per-shard trainNum ${trainNum}: ingest vec/s`] = n / ((nowMs() - t0) / 1000);
      log(`IVF trainNum ${trainNum}: ${Math.round(out[`per-shard trainNum ${trainNum}: ingest vec/s`]!)} vec/s`);
    });
  }
  return out;
}

/**
 * The same 500k x 128 data on 2 servers (one per core) vs 4 servers (the scenario): batch-1
 * p50/p99 and batch-100 QPS, Flat and IVF1024 (per-shard training on each share).
 */
async function topology(): Promise<Record<string, number>> {
  const n = 500_000;
  const batch = 5000;
  const { data, batches } = syntheticBatches(n, batch);
  const queries = data.queries(1000);
  const out: Record<string, number> = {};
  for (const kind of ['flat', 'ivf'] as const) {
    for (const servers of [2, 4]) {
      await withCluster(servers, {}, async (client) => {
        const cfg: Partial<IndexCfg> =
          kind === 'flat'
            ? { indexBuilderType: 'flat', dim: DIM, metric: 'l2', trainNum: batch }
            : { indexBuilderType: 'ivf_simple', dim: DIM, metric: 'l2', centroids: 1024, nprobe: 16, trainNum: n / servers, trainMode: 'per-shard' };
        await client.createIndex('t', cfg);
        await Promise.all(batches.map((b) => client.addIndexData('t', b.vectors, b.meta)));
        await waitReady(client, 't', n);
        await sleep(kind === 'ivf' ? 8000 : 1000); // let the post-training snapshot finish
        let i = 0;
        const one = await lat(kind === 'flat' ? 300 : 1000, () => client.search('t', queries.subarray((i % 1000) * DIM, (i++ % 1000 + 1) * DIM), 10), 20);
        const t0 = nowMs();
        for (let r = 0; r < 20; r++) await client.search('t', queries.subarray((r % 10) * 100 * DIM, ((r % 10) + 1) * 100 * DIM), 10);
        out[`${kind}, ${servers} servers: batch-1 p50 (ms)`] = one.p50 / 1000;
        out[`${kind}, ${servers} servers: batch-1 p99 (ms)`] = one.p99 / 1000;
        out[`${kind}, ${servers} servers: batch-100 QPS`] = 2000 / ((nowMs() - t0) / 1000);
        log(`${kind} ${servers} servers: p50 ${(one.p50 / 1000).toFixed(2)} ms`);
      });
    }
  }
  return out;
}

/** FAISS 1.7.3 scans the whole base once per query below 20 queries, once per block with sgemm above. */
async function blas(): Promise<Record<string, number>> {
  const n = 500_000;
  const data = new SyntheticDataset({ dim: DIM, seed: 1234 });
  const out: Record<string, number> = {};
  setOmpNumThreads(1);
  const shard = FaissIndex.fromFactory(DIM, 'Flat', 'l2');
  await shard.add(data.base(n / 4));
  const queries = data.queries(100);
  for (const nq of [1, 10, 19, 20, 32, 100]) {
    const q = queries.subarray(0, nq * DIM);
    await shard.search(q, 10);
    const reps = nq < 20 ? 20 : 10;
    const t0 = nowMs();
    for (let r = 0; r < reps; r++) await shard.search(q, 10);
    out[`Flat 125k x 128 (one server's share), 1 thread, batch ${nq}: QPS`] = (nq * reps) / ((nowMs() - t0) / 1000);
  }
  return out;
}

async function train(): Promise<Record<string, number>> {
  const data = new SyntheticDataset({ dim: DIM, seed: 1234 });
  const out: Record<string, number> = {};
  setOmpNumThreads(2);
  for (const rows of [125_000, 64_000, 40_000]) {
    const x = data.base(rows);
    const ix = FaissIndex.fromFactory(DIM, 'IVF1024,Flat', 'l2');
    const t0 = nowMs();
    await ix.train(x);
    out[`IVF1024 train on ${rows} rows, 1 k-means, 2 threads (s)`] = (nowMs() - t0) / 1000;
    log(`train ${rows}: ${out[`IVF1024 train on ${rows} rows, 1 k-means, 2 threads (s)`]!.toFixed(2)} s`);
  }
  setOmpNumThreads(1);
  const shares = Array.from({ length: 4 }, (_, s) => data.base(125_000, s * 125_000));
  const t0 = nowMs();
  await Promise.all(shares.map((x) => FaissIndex.fromFactory(DIM, 'IVF1024,Flat', 'l2').train(x)));
  out['IVF1024 train on 125000 rows x 4 shards concurrently, 1 thread each (s)'] = (nowMs() - t0) / 1000;
  setOmpNumThreads(2);
  return out;
}

async function memory(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const data = new SyntheticDataset({ dim: DIM, seed: 1234 });
  const n = 125_000;
  const base = data.base(n);
  const variants: Array<{ name: string; kind: 'flat' | 'ivf'; env?: Record<string, string>; nodeArgs?: string[] }> = [
    { name: 'Flat', kind: 'flat' },
    { name: 'Flat, node --gc-interval=100000 (frequent GCs: dead ArrayBuffers freed)', kind: 'flat', nodeArgs: ['--gc-interval=100000'] },
    { name: 'Flat, MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=1048576', kind: 'flat', env: { MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '1048576' } },
    { name: 'IVF1024 (per-shard training on the 125k)', kind: 'ivf' },
    { name: 'IVF1024, MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=1048576', kind: 'ivf', env: { MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '1048576' } },
  ];
  for (const v of variants) {
    const cluster = await startCluster(1, { threads: 1, ...(v.env ? { env: v.env } : {}), ...(v.nodeArgs ? { nodeArgs: v.nodeArgs } : {}) });
    try {
      await sleep(500);
      const idle = cluster.memory()[0]!;
      if (v === variants[0]) {
        out['idle server: RSS (MiB)'] = idle.rssBytes / MiB;
        out['idle server: RssAnon (MiB)'] = idle.anonBytes / MiB;
      }
      const client = await IndexClient.connect(cluster.discovery);
      try {
        const cfg: Partial<IndexCfg> =
          v.kind === 'flat'
            ? { indexBuilderType: 'flat', dim: DIM, metric: 'l2', trainNum: 5000 }
            : { indexBuilderType: 'ivf_simple', dim: DIM, metric: 'l2', centroids: 1024, nprobe: 16, trainNum: n, trainMode: 'per-shard' };
        await client.createIndex('m', cfg);
        await Promise.all(
          Array.from({ length: n / 5000 }, (_, b) =>
            client.addIndexData('m', base.subarray(b * 5000 * DIM, (b + 1) * 5000 * DIM), Array.from({ length: 5000 }, (_, i) => b * 5000 + i)),
          ),
        );
        await waitReady(client, 'm', n);
        await sleep(1000);
        const m = cluster.memory()[0]!;
        const st = (await client.status())[0]!;
        out[`${v.name}, holding 125k x 128: RSS (MiB)`] = m.rssBytes / MiB;
        out[`${v.name}, holding 125k x 128: peak RSS (MiB)`] = m.peakRssBytes / MiB;
        out[`${v.name}, holding 125k x 128: RssAnon (MiB)`] = m.anonBytes / MiB;
        out[`${v.name}, holding 125k x 128: peak RssAnon (MiB)`] = m.peakAnonBytes / MiB;
        out[`${v.name}, holding 125k x 128: V8 heapUsed (MiB)`] = (st.heapBytes as number) / MiB;
      } finally {
        await client.close();
      }
    } finally {
      await cluster.stop();
    }
  }
  out['raw vectors of 125k x 128 (MiB)'] = (n * DIM * 4) / MiB;
  return out;
}

async function main(argv: string[]): Promise<void> {
  let outFile: string | null = null;
  const which = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') outFile = argv[++i]!;
    else which.add(argv[i]!);
  }
  if (which.size === 0 || which.has('all')) for (const w of ['overhead', 'search-parts', 'ingest-parts', 'ingest-modes', 'ivf-trainnum', 'topology', 'blas', 'train', 'memory']) which.add(w);
  const result: Record<string, unknown> = { startedAt: new Date().toISOString(), loadBefore: loadavg() };
  const print = (title: string, rows: Record<string, number>, unit: string) => {
    console.log(`\n${title}`);
    for (const [k, v] of Object.entries(rows)) console.log(`  ${fmt(v).padStart(10)} ${unit}  ${k}`);
  };
  if (which.has('overhead')) {
    const r = await overhead();
    result.overhead = r;
    console.log('\nfixed cost per call (µs): p50 / p99 / mean');
    for (const [k, v] of Object.entries(r)) console.log(`  ${fmt(v.p50).padStart(8)} ${fmt(v.p99).padStart(8)} ${fmt(v.mean).padStart(8)}  ${k}`);
  }
  if (which.has('search-parts')) print('one batch-1 search, k=10, per step (µs, in-process)', (result.searchParts = await searchParts()) as Record<string, number>, 'µs');
  if (which.has('ingest-parts')) print('ingest steps per 5000 x 128 batch (ms, main thread unless noted)', (result.ingestParts = await ingestParts()) as Record<string, number>, 'ms');
  if (which.has('ingest-modes')) print('dfaiss Flat ingest of 500k x 128, 4 servers (vec/s)', (result.ingestModes = await ingestModes()) as Record<string, number>, 'vec/s');
  if (which.has('ivf-trainnum')) print('dfaiss IVF1024 ingest of 500k x 128, 4 servers, per-shard training (vec/s)', (result.ivfTrainNum = await ivfTrainNum()) as Record<string, number>, 'vec/s');
  if (which.has('topology')) print('2 servers (one per core) vs 4 servers, 500k x 128', (result.topology = await topology()) as Record<string, number>, '');
  if (which.has('blas')) print('batch size vs FAISS BLAS switch (distance_compute_blas_threshold = 20)', (result.blas = await blas()) as Record<string, number>, 'QPS');
  if (which.has('train')) print('IVF training', (result.train = await train()) as Record<string, number>, 's');
  if (which.has('memory')) print('server memory', (result.memory = await memory()) as Record<string, number>, 'MiB');
  result.loadAfter = loadavg();
  console.log(`\nload before ${(result.loadBefore as number[]).map((v) => v.toFixed(2)).join(' ')}, after ${loadavg().map((v) => v.toFixed(2)).join(' ')}`);
  if (outFile) writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
}

process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
await main(process.argv.slice(2));
