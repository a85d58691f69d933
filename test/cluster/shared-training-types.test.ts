// Shared training for every trainable type (issue 15): IVF-PQ (knnlm, PQ factory strings,
// fast scan), IVF-SQ8, HNSW+SQ8, OPQ and PCA pre-transforms train once on one server and
// every shard installs the same state (plain numbers, checked against its own index). Recall
// is compared with per-shard training on the same data; a restarted shard keeps the state.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, type IndexCfg } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { exactSearch, recallAtK } from '../../src/datasets/exact.js';
import { RpcClient } from '../../src/protocol/index.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { SHARED_TRAINING_TYPES } from '../helpers/trainable-types.js';

const dim = 32;
const N = 9_000;
const K = 10;
// 1000 queries (200 before): less of a recall difference is the luck of the query sample.
const NQ = 1000;

interface DataSet {
  base: Float32Array;
  queries: Float32Array;
  truth: Int32Array;
}
function dataSet(seed: number): DataSet {
  const data = new SyntheticDataset({ dim, seed });
  const base = data.base(N);
  const queries = data.queries(NQ);
  return { base, queries, truth: new Int32Array(Array.from(exactSearch(base, queries, dim, K, 'l2').labels, Number)) };
}
const main = dataSet(15);
const { base, queries } = main;

let cluster: TestCluster;
before(async () => {
  cluster = await startCluster(3, { serverArgs: ['--train-threads', '2'] });
});
after(async () => {
  await cluster.stop();
});

async function build(client: IndexClient, id: string, cfg: Partial<IndexCfg>, params: Record<string, number>, trainMode: 'shared' | 'per-shard', ds: DataSet = main): Promise<number> {
  const { base, queries, truth } = ds;
  // Both train on every vector: per shard each server on its own 3000, shared one server on all 9000.
  await client.createIndex(id, { ...cfg, dim, metric: 'l2', trainNum: trainMode === 'shared' ? N : N / 3, trainMode });
  const jobs = [];
  for (let i = 0; i < N; i += 1000) jobs.push(client.addIndexData(id, base.subarray(i * dim, (i + 1000) * dim), Array.from({ length: 1000 }, (_, j) => i + j)));
  await Promise.all(jobs);
  await client.trainingSettled(id);
  const end = Date.now() + 110_000;
  while ((await client.getState(id)) !== IndexState.TRAINED || (await client.getNtotal(id)) !== N) {
    assert.ok(Date.now() < end, `${id} trained`);
    await new Promise((r) => setTimeout(r, 50));
  }
  for (const [name, value] of Object.entries(params)) await client.setSearchParameter(id, name, value);
  const r = await client.search(id, queries, K);
  const found = new Int32Array(r.metadata.flatMap((row) => Array.from({ length: K }, (_, i) => (row[i] as number | undefined) ?? -1)));
  return recallAtK(truth, found, NQ, K);
}

async function states(id: string): Promise<Array<{ sharedTraining: boolean; layout: unknown }>> {
  return Promise.all(
    cluster.servers.map(async (s) => {
      const raw = await RpcClient.connect('127.0.0.1', s.port);
      try {
        return (await raw.call<{ sharedTraining: boolean; layout: unknown }>('getInfo', { indexId: id })).result;
      } finally {
        await raw.close();
      }
    }),
  );
}

// knnlm's 8-byte PQ codes: one training's recall scatters by sd ~0.011 around the other
// side's (bench/study-shared-recall.ts, 8 data sets of 9k: shared minus per-shard
// -0.013..+0.020, mean +0.005), so one data set cannot resolve the 0.01. Its bound
// holds for the mean over four fixed data sets (sd of that mean ~0.006), each one also within
// 0.03. Training sorts its rows, so every run of this test sees the same recalls.
const KNNLM_SEEDS = [15, 1, 2, 3];

for (const [name, , cfg, params] of SHARED_TRAINING_TYPES) {
  test(`shared training: ${name} trains once, every shard installs it, recall as per-shard`, { timeout: 300_000 }, async (t) => {
    const client = await IndexClient.connect(cluster.discovery);
    const id = name.replace(/[^a-z]/gi, '').toLowerCase();
    try {
      const sets = name.startsWith('knnlm') ? KNNLM_SEEDS.map((seed) => (seed === 15 ? main : dataSet(seed))) : [main];
      const pairs: Array<[number, number]> = [];
      for (const [i, ds] of sets.entries()) {
        const shared = await build(client, `${id}-s`, cfg, params, 'shared', ds);
        assert.ok((await states(`${id}-s`)).every((s) => s.sharedTraining), 'the index trains once for the cluster');
        const perShard = await build(client, `${id}-p`, cfg, params, 'per-shard', ds);
        t.diagnostic(`data set ${i}: recall@10 shared ${shared.toFixed(3)} per-shard ${perShard.toFixed(3)}`);
        pairs.push([shared, perShard]);
        assert.ok(shared > 0.3, `recall ${shared} is meaningful`);
        if (i < sets.length - 1) {
          await client.dropIndex(`${id}-s`);
          await client.dropIndex(`${id}-p`);
        }
      }
      // Issue 15's bound, one-sided: shared training may be better (it fits PQ/OPQ on three
      // times the data). In-process on 8 data sets: SQ8, HNSW-SQ8 and PCA differ by at most
      // 0.002; fast scan and OPQ are shared >= per-shard - 0.001.
      const mean = (i: 0 | 1): number => pairs.reduce((a, p) => a + p[i], 0) / pairs.length;
      assert.ok(mean(0) >= mean(1) - 0.01, `shared training's recall ${mean(0)} is within 0.01 of per-shard ${mean(1)} (or better)`);
      for (const [shared, perShard] of pairs) assert.ok(shared >= perShard - (pairs.length > 1 ? 0.03 : 0.01), `shared ${shared} vs per-shard ${perShard}`);
      // Every shard holds the same trained state: a vector that is its own query comes back first from any shard.
      const own = await client.search(`${id}-s`, sets[sets.length - 1]!.base.subarray(0, 30 * dim), 1);
      const firstHits = own.metadata.filter((m, i) => m[0] === i).length;
      assert.ok(firstHits >= 20, `${firstHits}/30 vectors find themselves`);
    } finally {
      await client.dropIndex(`${id}-s`).catch(() => {});
      await client.dropIndex(`${id}-p`).catch(() => {});
      await client.close();
    }
  });
}

test('shared IVF-PQ: a shard SIGKILLed after the install comes back with the same state, and searches the same', { timeout: 120_000 }, async () => {
  const client = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 50 });
  try {
    await client.createIndex('pqkill', { indexBuilderType: 'knnlm', centroids: 32, extra: { codeSize: 8, bitsPerVector: 6 }, dim, metric: 'l2', trainNum: 4000, nprobe: 32 });
    for (let i = 0; i < 6000; i += 1000) await client.addIndexData('pqkill', base.subarray(i * dim, (i + 1000) * dim), Array.from({ length: 1000 }, (_, j) => i + j));
    await client.trainingSettled('pqkill');
    while ((await client.getState('pqkill')) !== IndexState.TRAINED) await new Promise((r) => setTimeout(r, 50));
    const before = await client.search('pqkill', queries, K);
    const port = cluster.servers[1]!.port;
    await cluster.kill(1);
    await cluster.start(1, ['--port', String(port), '--load-index']);
    while ((await client.getState('pqkill').catch(() => 'down')) !== IndexState.TRAINED) await new Promise((r) => setTimeout(r, 50));
    const afterRestart = await client.search('pqkill', queries, K);
    assert.deepEqual(afterRestart.metadata, before.metadata, 'the same hits: the restarted shard has the same codebook and centroids');
    assert.deepEqual(afterRestart.scores, before.scores);
  } finally {
    await client.dropIndex('pqkill').catch(() => {});
    await client.close();
  }
});
