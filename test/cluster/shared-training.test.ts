// Shared training (trainMode 'shared'): one training for the whole cluster, the same trained
// index on every shard, durable across restarts, and the per-shard mode still available.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ValidationError } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 16;
const data = new SyntheticDataset({ dim, seed: 21 });
let cluster: TestCluster;
before(async () => {
  cluster = await startCluster(3, { serverArgs: ['--train-threads', '2'] });
});
after(async () => {
  await cluster.stop();
});

async function waitTrained(client: IndexClient, indexId: string, ntotal: number, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const state = await client.getState(indexId);
    if (state === IndexState.TRAINED && (await client.getNtotal(indexId)) === ntotal) return;
    if (Date.now() > end) throw new Error(`index ${indexId}: ${state}, ntotal ${await client.getNtotal(indexId)} != ${ntotal} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Adds `base` in batches; metadata = row number (+ firstRow). */
async function addAll(client: IndexClient, indexId: string, base: Float32Array, batch: number, firstRow = 0): Promise<void> {
  const n = base.length / dim;
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < n; i += batch) {
    const rows = base.subarray(i * dim, Math.min(n, i + batch) * dim);
    jobs.push(client.addIndexData(indexId, rows, Array.from({ length: rows.length / dim }, (_, j) => firstRow + i + j)));
  }
  await Promise.all(jobs);
}

const sameCentroids = (cs: Array<{ data: Float32Array }>): boolean => cs.every((c) => Buffer.from(c.data.buffer).equals(Buffer.from(cs[0]!.data.buffer)));

test('shared: training starts once the cluster buffers trainNum, and every shard gets the same centroids', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  const other = await IndexClient.connect(cluster.discovery);
  try {
    // trainNum counts across the cluster: 1200 of 3000 vectors, so training starts
    // mid-ingest (per-shard it would wait for 1200 on each server, i.e. never here).
    await client.createIndex('shared', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 16, nprobe: 16, trainNum: 1200, trainMode: 'shared' });
    const base = data.base(3000);
    // Two clients ingest at once: both may start the training; the trainer runs one.
    await Promise.all([addAll(client, 'shared', base.subarray(0, 1500 * dim), 100), addAll(other, 'shared', base.subarray(1500 * dim), 100, 1500)]);
    await waitTrained(client, 'shared', 3000);
    const cs = await client.getCentroids('shared');
    assert.equal(cs.length, 3);
    assert.ok(sameCentroids(cs), 'every shard has the trainer\'s centroids');
    // nprobe = nlist: exact results; every vector finds itself first.
    const r = await client.search('shared', base.subarray(0, 20 * dim), 1);
    assert.deepEqual(r.metadata.map((m) => m[0]), Array.from({ length: 20 }, (_, i) => i));
  } finally {
    await client.dropIndex('shared').catch(() => {});
    await other.close();
    await client.close();
  }
});

test('per-shard mode keeps the original behaviour: each shard trains its own centroids', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  try {
    await client.createIndex('pershard', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 16, trainNum: 300, trainMode: 'per-shard' });
    await addAll(client, 'pershard', data.base(3000), 100);
    await waitTrained(client, 'pershard', 3000);
    assert.ok(!sameCentroids(await client.getCentroids('pershard')), 'per-shard k-means runs on different data, so centroids differ');
  } finally {
    await client.dropIndex('pershard').catch(() => {});
    await client.close();
  }
});

test('shared, trainNum 0: syncTrain trains once on request; a Flat index needs no shared training', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  try {
    await client.createIndex('ondemand', { indexBuilderType: 'ivf_simple', dim, metric: 'dot', centroids: 8, trainNum: 0, trainRatio: 0.5, trainMode: 'shared' });
    await addAll(client, 'ondemand', data.base(1500), 150);
    assert.equal(await client.getState('ondemand'), IndexState.NOT_TRAINED);
    await client.syncTrain('ondemand');
    await waitTrained(client, 'ondemand', 1500);
    assert.ok(sameCentroids(await client.getCentroids('ondemand')));

    await client.createIndex('sharedflat', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1, trainMode: 'shared' });
    await addAll(client, 'sharedflat', data.base(600), 100);
    await waitTrained(client, 'sharedflat', 600);
  } finally {
    await client.dropIndex('ondemand').catch(() => {});
    await client.dropIndex('sharedflat').catch(() => {});
    await client.close();
  }
});

test('shared: a shard down during training gets the same index later; a restarted shard keeps it', async () => {
  const client = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 50 });
  const live = await IndexClient.connectTo(cluster.servers.slice(0, 2).map((s) => ({ host: '127.0.0.1', port: s.port })));
  try {
    await client.createIndex('late', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 16, nprobe: 16, trainNum: 600, trainMode: 'shared', saveIntervalSec: 0 });
    await addAll(client, 'late', data.base(300), 100); // 100 per server, below trainNum
    const port2 = cluster.servers[2]!.port;
    await cluster.kill(2);
    await new Promise((r) => setTimeout(r, 100)); // the client sees both connections close
    // Adds skip the dead server; the training runs without it.
    await addAll(client, 'late', data.base(900, 300), 100);
    await waitTrained(live, 'late', 1100);
    await cluster.start(2, ['--port', String(port2), '--load-index']);
    // Server 2 is back, untrained with its 100 buffered vectors: the first add it answers
    // makes the client install the cluster's trained index there.
    await addAll(client, 'late', data.base(300, 1200), 100);
    await waitTrained(client, 'late', 1500);
    const before = await client.getCentroids('late');
    assert.ok(sameCentroids(before));

    // SIGKILL right after the install, then restart: the index comes back with the same centroids.
    const port1 = cluster.servers[1]!.port;
    await cluster.kill(1);
    await cluster.start(1, ['--port', String(port1), '--load-index']);
    await waitTrained(client, 'late', 1500);
    const afterRestart = await client.getCentroids('late');
    assert.ok(sameCentroids(afterRestart));
    assert.ok(Buffer.from(afterRestart[0]!.data.buffer).equals(Buffer.from(before[0]!.data.buffer)));
  } finally {
    await client.dropIndex('late').catch(() => {});
    await live.close();
    await client.close();
  }
});

test('installTrained refuses what are not centroids of the right shape; the server keeps serving', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  const port = cluster.servers[0]!.port;
  const { RpcClient } = await import('../../src/protocol/index.js');
  const raw = await RpcClient.connect('127.0.0.1', port, {});
  try {
    await client.createIndex('bad', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 4, trainNum: 0, trainMode: 'shared' });
    const isBad = (field: string) => (err: Error) => err instanceof ValidationError && err.message.includes(field);
    // Not f32, nothing, a serialized FAISS index (never deserialized from the wire), a partial row, non-finite values.
    await assert.rejects(raw.call('installTrained', { indexId: 'bad' }, [new Uint8Array([1, 2, 3, 4])]), isBad('centroids'));
    await assert.rejects(raw.call('installTrained', { indexId: 'bad' }, []), isBad('centroids'));
    await assert.rejects(raw.call('installTrained', { indexId: 'bad' }, [new Float32Array(dim * 2 + 1)]), isBad('centroids'));
    await assert.rejects(raw.call('installTrained', { indexId: 'bad' }, [new Float32Array(dim * 4).fill(NaN)]), isBad('centroids'));
    await assert.rejects(raw.call('trainShared', { indexId: 'bad' }, [new Float32Array(dim * 2 + 1)]), isBad('sample'));
    assert.equal(await client.getState('bad'), IndexState.NOT_TRAINED);
    // A valid install: 4 x dim centroids (with nlist taken from their count).
    const installed = await raw.call<{ installed: boolean }>('installTrained', { indexId: 'bad' }, [new SyntheticDataset({ dim, seed: 9 }).base(4)]);
    assert.equal(installed.result.installed, true);
    assert.equal((await raw.call<string>('getState', { indexId: 'bad' })).result, 'TRAINED');
    // IVF-PQ shares its training too (centroids and codebook travel as numbers); a state
    // whose layout does not fit the receiving index is refused, naming the layout.
    await client.createIndex('pq', { indexBuilderType: 'knnlm', dim, metric: 'l2', centroids: 4, extra: { codeSize: 4, bitsPerVector: 4 }, trainNum: 0, trainMode: 'shared' });
    const info = (await raw.call<{ sharedTraining: boolean }>('getInfo', { indexId: 'pq' })).result;
    assert.equal(info.sharedTraining, true);
    await assert.rejects(raw.call('installTrained', { indexId: 'pq', nlist: 4, layout: [['coarse', 4 * dim]] }, [new Float32Array(4 * dim)]), isBad('layout'));
  } finally {
    await raw.close();
    await client.dropIndex('bad').catch(() => {});
    await client.dropIndex('pq').catch(() => {});
    await client.close();
  }
});

test('syncTrain never fails because one shard is empty (per-shard and shared); the cluster counts as TRAINED', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  try {
    for (const trainMode of ['per-shard', 'shared'] as const) {
      const id = `one-${trainMode}`;
      await client.createIndex(id, { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 8, nprobe: 8, trainNum: 0, trainMode });
      await client.addIndexData(id, data.base(400)); // one batch: one server has vectors, two are empty
      await client.syncTrain(id);
      await waitTrained(client, id, 400);
      const r = await client.search(id, data.base(3), 1);
      assert.equal(r.scores.length, 3);
    }
    // With no vector anywhere, syncTrain says so.
    await client.createIndex('none', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 8, trainNum: 0, trainMode: 'per-shard' });
    await assert.rejects(client.syncTrain('none'), /no vectors to train on/);
  } finally {
    for (const id of ['one-per-shard', 'one-shared', 'none']) await client.dropIndex(id).catch(() => {});
    await client.close();
  }
});

test('a training sample larger than the servers\' frame limit travels in chunks (--max-frame-mb 1)', { timeout: 120_000 }, async () => {
  const small = await startCluster(2, { serverArgs: ['--max-frame-mb', '1'] });
  const client = await IndexClient.connect(small.discovery);
  try {
    const d = 64;
    const big = new SyntheticDataset({ dim: d, seed: 5 });
    // 12000 x 64 float32 = 3 MiB of sample, 3x one frame.
    await client.createIndex('chunked', { indexBuilderType: 'ivf_simple', dim: d, metric: 'l2', centroids: 32, nprobe: 32, trainNum: 12_000 });
    const base = big.base(12_000);
    for (let i = 0; i < 12_000; i += 1000) await client.addIndexData('chunked', base.subarray(i * d, (i + 1000) * d), Array.from({ length: 1000 }, (_, j) => i + j));
    await client.trainingSettled('chunked');
    const end = Date.now() + 30_000;
    while ((await client.getState('chunked')) !== IndexState.TRAINED || (await client.getNtotal('chunked')) !== 12_000) {
      assert.ok(Date.now() < end, 'trained');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(sameCentroids(await client.getCentroids('chunked')));
    const r = await client.search('chunked', base.subarray(0, 10 * d), 1);
    assert.deepEqual(r.metadata.map((m) => m[0]), Array.from({ length: 10 }, (_, i) => i));
  } finally {
    await client.close();
    await small.stop();
  }
});
