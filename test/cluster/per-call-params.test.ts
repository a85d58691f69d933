// Search parameters per call (issue 17, item 4): search(id, q, k, { params: { nprobe } })
// applies to that call only, through FAISS SearchParameters, so two clients with different
// nprobe searching at once each get their own results and the index's default never moves.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ValidationError } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { exactSearch } from '../../src/datasets/exact.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 16;
const N = 6000;
const data = new SyntheticDataset({ dim, seed: 17 });
const base = data.base(N);
const queries = data.queries(50);
let cluster: TestCluster;
before(async () => {
  cluster = await startCluster(2);
});
after(async () => {
  await cluster.stop();
});

async function fill(client: IndexClient, id: string, cfg: Record<string, unknown>): Promise<void> {
  await client.createIndex(id, { dim, metric: 'l2', centroids: 64, nprobe: 1, trainNum: 3000, ...cfg });
  for (let i = 0; i < N; i += 1000) await client.addIndexData(id, base.subarray(i * dim, (i + 1000) * dim), Array.from({ length: 1000 }, (_, j) => i + j));
  await client.trainingSettled(id);
  while ((await client.getState(id)) !== IndexState.TRAINED || (await client.getNtotal(id)) !== N) await new Promise((r) => setTimeout(r, 30));
}

for (const [name, cfg] of [
  ['IVF-Flat', { indexBuilderType: 'ivf_simple' }],
  ['IVF-PQ fast scan (FAISS takes no SearchParameters there)', { faissFactory: 'IVF{centroids},PQ8x4fs' }],
] as const) {
  test(`per-call nprobe on ${name}: two clients at once each get their own, the default stays`, { timeout: 120_000 }, async () => {
    const a = await IndexClient.connect(cluster.discovery);
    const b = await IndexClient.connect(cluster.discovery);
    const id = name.startsWith('IVF-Flat') ? 'pc-flat' : 'pc-fs';
    try {
      await fill(a, id, cfg);
      const narrow = await b.search(id, queries, 10); // the default, nprobe 1
      const wide = await a.search(id, queries, 10, { params: { nprobe: 64 } });
      if (id === 'pc-flat') {
        const exact = exactSearch(base, queries, dim, 10, 'l2');
        assert.deepEqual(wide.metadata.map((row) => row[0]), Array.from({ length: 50 }, (_, q) => Number(exact.labels[q * 10]!)), 'nprobe = nlist is exact');
      }
      assert.notDeepEqual(wide.metadata, narrow.metadata, 'nprobe 64 finds other neighbours than nprobe 1');
      const runs = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a.search(id, queries, 10, { params: { nprobe: 64 } }) : b.search(id, queries, 10, { params: { nprobe: 1 } }))),
      );
      runs.forEach((r, i) => assert.deepEqual(r.metadata, i % 2 === 0 ? wide.metadata : narrow.metadata, `run ${i} got its own nprobe`));
      assert.deepEqual((await b.search(id, queries, 10)).metadata, narrow.metadata, 'the index default is still nprobe 1');
    } finally {
      await a.dropIndex(id).catch(() => {});
      await a.close();
      await b.close();
    }
  });
}

test('per-call parameters are validated in the client and the server: name and range', { timeout: 60_000 }, async () => {
  const client = await IndexClient.connect(cluster.discovery);
  try {
    await fill(client, 'pc-bad', { indexBuilderType: 'ivf_simple' });
    const named = (field: string) => (e: unknown) => e instanceof ValidationError && e.field === field;
    await assert.rejects(client.search('pc-bad', queries, 5, { params: { nprobe: 0 } }), named('nprobe'));
    await assert.rejects(client.search('pc-bad', queries, 5, { params: { nprobe: 65 } }), named('nprobe'));
    await assert.rejects(client.search('pc-bad', queries, 5, { params: { efSearch: 10 } }), named('name'));
    await assert.rejects(client.search('pc-bad', queries, 5, { params: { k_factor: 2 } }), named('params.k_factor'));
    // The server checks too (a client that skips the check: a raw call).
    const { RpcClient } = await import('../../src/protocol/index.js');
    const raw = await RpcClient.connect('127.0.0.1', cluster.servers[0]!.port);
    try {
      await assert.rejects(raw.call('search', { indexId: 'pc-bad', k: 5, params: { nprobe: 1e12 } }, [queries]), named('nprobe'));
    } finally {
      await raw.close();
    }
    const ok = await client.search('pc-bad', queries, 5, { params: { nprobe: 8, max_codes: 100 } });
    assert.equal(ok.scores.length, 50);
  } finally {
    await client.dropIndex('pc-bad').catch(() => {});
    await client.close();
  }
});

test('per-call efSearch on HNSW-SQ: two clients at once each get their own, the default stays (FAISS 1.7.3 ignores SearchParametersHNSW::efSearch; the binding sets it for the one search)', { timeout: 180_000 }, async () => {
  const a = await IndexClient.connect(cluster.discovery);
  const b = await IndexClient.connect(cluster.discovery);
  const far = new SyntheticDataset({ dim, seed: 99 }).queries(50); // another data set's queries: a hard walk
  try {
    await a.createIndex('pc-hnsw', { dim, metric: 'l2', indexBuilderType: 'hnswsq', nprobe: 16, trainNum: 3000, extra: { storeN: 8 } });
    for (let i = 0; i < N; i += 1000) await a.addIndexData('pc-hnsw', base.subarray(i * dim, (i + 1000) * dim), Array.from({ length: 1000 }, (_, j) => i + j));
    await a.trainingSettled('pc-hnsw');
    while ((await a.getState('pc-hnsw')) !== IndexState.TRAINED || (await a.getNtotal('pc-hnsw')) !== N) await new Promise((r) => setTimeout(r, 30));
    const exact = exactSearch(base, far, dim, 10, 'l2');
    const recall = (rows: unknown[][]) => rows.reduce<number>((s, row, q) => s + row.filter((m) => Array.from(exact.labels.subarray(q * 10, q * 10 + 10), Number).includes(m as number)).length, 0) / 500;
    const narrow = await b.search('pc-hnsw', far, 10); // the default, efSearch 16
    const wide = await a.search('pc-hnsw', far, 10, { params: { efSearch: 2048 } });
    console.log(`HNSW-SQ recall@10: efSearch 16 (default) ${recall(narrow.metadata)}, 2048 per call ${recall(wide.metadata)}`);
    assert.ok(recall(wide.metadata) > recall(narrow.metadata), 'a wider walk finds more true neighbours');
    const runs = await Promise.all(
      Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a.search('pc-hnsw', far, 10, { params: { efSearch: 2048 } }) : b.search('pc-hnsw', far, 10))),
    );
    runs.forEach((r, i) => assert.deepEqual(r.metadata, i % 2 === 0 ? wide.metadata : narrow.metadata, `run ${i} got its own efSearch`));
    assert.deepEqual((await b.search('pc-hnsw', far, 10)).metadata, narrow.metadata, 'the index default is still efSearch 16');
  } finally {
    await a.dropIndex('pc-hnsw').catch(() => {});
    await a.close();
    await b.close();
  }
});
