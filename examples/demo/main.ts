/**
 * The main job (`npm run demo`): a 4-server local cluster (LocalCluster: real `dfaiss server`
 * processes on loopback), Fashion-MNIST indexed through IndexClient with metadata into a
 * flat and an IVF index, searches, recall@10 against exact search, timings, clean shutdown.
 * Data: Debian's Fashion-MNIST (60k x 784) when installed, else synthetic structured vectors.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient } from '../../dist/client/index-client.js';
import type { IndexCfg } from '../../dist/config/index.js';
import { exactSearch } from '../../dist/datasets/exact.js';
import { FASHION_MNIST_CLASSES, fashionMnistAvailable, loadFashionMnist, loadFashionMnistLabels } from '../../dist/datasets/fashion-mnist.js';
import { SyntheticDataset } from '../../dist/datasets/synthetic.js';
import { LocalCluster } from '../../dist/launch/local.js';
import { IndexState } from '../../dist/shard/state.js';

const NUM_SERVERS = 4;
const K = 10;
const NQ = 200;
const BATCH = 2000;

interface Meta {
  id: number;
  label?: string;
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const secs = (t0: number): number => (performance.now() - t0) / 1000;

function recall(truth: number[][], found: number[][], k: number): number {
  let hits = 0;
  for (let q = 0; q < truth.length; q++) {
    const got = new Set(found[q]!.slice(0, k));
    for (const id of truth[q]!.slice(0, k)) if (got.has(id)) hits++;
  }
  return hits / (truth.length * k);
}

function ids(metadata: unknown[][]): number[][] {
  return metadata.map((row) => row.map((m) => (m as Meta).id));
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function waitTrained(client: IndexClient, indexId: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while ((await client.getState(indexId)) !== IndexState.TRAINED) {
    if (Date.now() > end) throw new Error(`index ${indexId} not TRAINED after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends every batch without awaiting each (the client keeps a bounded number in flight). */
async function ingest(client: IndexClient, indexId: string, base: Float32Array, dim: number, labels: Uint8Array | null): Promise<number> {
  const n = base.length / dim;
  const t0 = performance.now();
  const sends: Promise<void>[] = [];
  for (let start = 0; start < n; start += BATCH) {
    const end = Math.min(n, start + BATCH);
    const metadata: Meta[] = [];
    for (let i = start; i < end; i++) metadata.push(labels ? { id: i, label: FASHION_MNIST_CLASSES[labels[i]!]! } : { id: i });
    sends.push(client.addIndexData(indexId, base.subarray(start * dim, end * dim), metadata));
  }
  await Promise.all(sends);
  return secs(t0);
}

async function main(): Promise<void> {
  // ---- data ----
  let base: Float32Array;
  let queries: Float32Array;
  let dim: number;
  let source: string;
  let labels: { train: Uint8Array; test: Uint8Array } | null = null;
  let t0 = performance.now();
  if (fashionMnistAvailable()) {
    const fm = loadFashionMnist({ testLimit: NQ });
    ({ dim } = fm);
    base = fm.train;
    queries = fm.test;
    labels = loadFashionMnistLabels({ testLimit: NQ });
    source = 'Fashion-MNIST (Debian dataset-fashion-mnist)';
  } else {
    dim = 128;
    const data = new SyntheticDataset({ dim, seed: 42 });
    base = data.base(60_000);
    queries = data.queries(NQ);
    source = 'synthetic clustered vectors (install dataset-fashion-mnist for real data)';
  }
  const n = base.length / dim;
  console.log(`data: ${source}: ${fmt(n)} x ${dim} float32, ${NQ} queries, top-${K}, L2 (read in ${secs(t0).toFixed(1)} s)`);

  // ---- cluster ----
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-demo-'));
  const cluster = new LocalCluster({
    numServers: NUM_SERVERS,
    saveDir: join(dir, 'data'),
    discoveryConfig: join(dir, 'discovery.txt'),
    serverLogs: 'capture',
    serverLogLevel: 'warn',
  });
  let stopping = false;
  const onSignal = (): void => {
    if (stopping) return;
    stopping = true;
    console.log('\ninterrupted: stopping the servers');
    cluster.stop().finally(() => {
      rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  t0 = performance.now();
  const servers = await cluster.start();
  console.log(
    `cluster: ${NUM_SERVERS} dfaiss server processes up in ${secs(t0).toFixed(2)} s (pids ${servers.map((s) => s.pid).join(', ')}), ` +
      `${cluster.threadsPerServer} FAISS thread(s) each, discovery file ${cluster.discoveryConfig}`,
  );
  let client: IndexClient | null = null;
  try {
    client = await IndexClient.connect(cluster.discoveryConfig, { discoveryTimeoutMs: 10_000, clientName: 'dfaiss-demo' });

    // ---- flat: exact search across the shards ----
    const flatCfg: Partial<IndexCfg> = { indexBuilderType: 'flat', dim, metric: 'l2' };
    await client.createIndex('demo-flat', flatCfg);
    t0 = performance.now();
    let s = await ingest(client, 'demo-flat', base, dim, labels?.train ?? null);
    await client.syncTrain('demo-flat'); // a flat index needs no training: this just moves the buffer in
    await waitTrained(client, 'demo-flat', 60_000);
    console.log(`ingest 'demo-flat'  (Flat): ${fmt(n)} vectors + metadata in ${s.toFixed(2)} s = ${fmt(n / s)} vectors/s; ntotal ${fmt(await client.getNtotal('demo-flat'))}`);

    // ---- IVF: one shared training once the cluster has buffered trainNum vectors, installed on every shard ----
    const centroids = 128;
    const trainNum = 39 * centroids + 8; // FAISS k-means wants >= 39 points per centroid
    await client.createIndex('demo-ivf', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids, trainNum, nprobe: 8 });
    t0 = performance.now();
    s = await ingest(client, 'demo-ivf', base, dim, labels?.train ?? null);
    const stateAfterSend = await client.getState('demo-ivf');
    await waitTrained(client, 'demo-ivf', 120_000);
    console.log(
      `ingest 'demo-ivf'   (IVF${centroids},Flat, one training on ${trainNum} vectors drawn across the shards): ${fmt(n)} vectors in ${s.toFixed(2)} s = ${fmt(n / s)} vectors/s ` +
        `(state then: ${stateAfterSend}); all shards TRAINED after ${secs(t0).toFixed(2)} s; ntotal ${fmt(await client.getNtotal('demo-ivf'))}`,
    );

    // ---- exact check: the distributed flat index against brute force in TypeScript ----
    const nCheck = 20;
    t0 = performance.now();
    const truth = exactSearch(base, queries.subarray(0, nCheck * dim), dim, K, 'l2');
    const bruteMs = performance.now() - t0;
    const truthIds = Array.from({ length: nCheck }, (_, q) => Array.from(truth.labels.subarray(q * K, (q + 1) * K), Number));

    // ---- batched search ----
    console.log(`\nsearch: ${NQ} queries in one call, k=${K}, fan-out to ${NUM_SERVERS} servers + heap merge in the client`);
    t0 = performance.now();
    const flat = await client.search('demo-flat', queries, K);
    let ms = performance.now() - t0;
    const flatIds = ids(flat.metadata);
    console.log(
      `  Flat               ${ms.toFixed(1).padStart(7)} ms  ${fmt((NQ / ms) * 1000).padStart(6)} QPS  recall@${K} vs brute-force TypeScript (${nCheck} queries, ${bruteMs.toFixed(0)} ms): ${recall(truthIds, flatIds, K).toFixed(3)}`,
    );
    for (const nprobe of [1, 8, 32]) {
      await client.setNprobe('demo-ivf', nprobe);
      t0 = performance.now();
      const r = await client.search('demo-ivf', queries, K);
      ms = performance.now() - t0;
      console.log(`  IVF nprobe=${String(nprobe).padEnd(2)}      ${ms.toFixed(1).padStart(7)} ms  ${fmt((NQ / ms) * 1000).padStart(6)} QPS  recall@${K} vs Flat: ${recall(flatIds, ids(r.metadata), K).toFixed(3)}`);
    }

    // ---- one query at a time: latency ----
    await client.setNprobe('demo-ivf', 8);
    const lat: Record<string, number[]> = { 'demo-flat': [], 'demo-ivf': [] };
    for (let q = 0; q < 100; q++) {
      for (const id of Object.keys(lat)) {
        const one = queries.subarray((q % NQ) * dim, ((q % NQ) + 1) * dim);
        t0 = performance.now();
        await client.search(id, one, K);
        lat[id]!.push(performance.now() - t0);
      }
    }
    for (const [id, values] of Object.entries(lat)) {
      values.sort((a, b) => a - b);
      console.log(`  latency, 1 query per call (${id}${id === 'demo-ivf' ? ', nprobe 8' : ''}): p50 ${percentile(values, 50).toFixed(2)} ms, p99 ${percentile(values, 99).toFixed(2)} ms (100 calls)`);
    }

    // ---- what the hits look like ----
    const first = await client.search('demo-ivf', queries.subarray(0, dim), 5);
    const qLabel = labels ? ` (${FASHION_MNIST_CLASSES[labels.test[0]!]})` : '';
    console.log(`\nfirst test query${qLabel}, top-5 (metadata, squared L2):`);
    first.metadata[0]!.forEach((m, i) => console.log(`  ${JSON.stringify(m)}  ${first.scores[0]![i]!.toFixed(2)}`));
    if (labels) {
      let agree = 0;
      flat.metadata.forEach((row, q) => {
        const votes = new Map<string, number>();
        for (const m of row) votes.set((m as Meta).label!, (votes.get((m as Meta).label!) ?? 0) + 1);
        const best = [...votes].sort((a, b) => b[1] - a[1])[0]![0];
        if (best === FASHION_MNIST_CLASSES[labels!.test[q]!]) agree++;
      });
      console.log(`10-NN majority label = query label (from the metadata): ${((100 * agree) / NQ).toFixed(1)}% of ${NQ} test images`);
    }

    t0 = performance.now();
    await client.saveIndex('demo-ivf');
    console.log(`saveIndex('demo-ivf') on ${NUM_SERVERS} servers: ${secs(t0).toFixed(2)} s`);
  } catch (err) {
    for (const srv of cluster.servers) {
      const tail = cluster.logTail(srv.rank);
      if (tail.length) console.error(`server ${srv.rank} last log lines:\n  ${tail.slice(-5).join('\n  ')}`);
    }
    throw err;
  } finally {
    await client?.close();
    const pids = cluster.servers.map((srv) => srv.pid).filter((p) => p > 0);
    t0 = performance.now();
    await cluster.stop();
    const left = pids.filter((pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    console.log(`\nshutdown: ${pids.length} servers stopped gracefully in ${secs(t0).toFixed(2)} s; child processes left: ${left.length}`);
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const started = performance.now();
await main();
console.log(`demo finished in ${secs(started).toFixed(1)} s`);
