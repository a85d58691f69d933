// Records with ids across restarts (issue 16): deletes and upserts survive a restore from
// snapshot + WAL (SIGKILL and graceful), compacted snapshots load with the right ids, and a
// mass delete keeps search exact while FAISS shrinks to the live vectors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState } from '../../src/index.js';
import { FaissIndex } from '../../src/native/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster } from '../helpers/cluster.js';

const dim = 16;
const data = new SyntheticDataset({ dim, seed: 8 });

async function until(what: string, fn: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Exact top-k ids over the live records. */
async function reference(base: Float32Array, live: number[], queries: Float32Array, k: number): Promise<number[][]> {
  const ref = FaissIndex.fromFactory(dim, 'Flat', 'l2');
  const rows = new Float32Array(live.length * dim);
  live.forEach((i, j) => rows.set(base.subarray(i * dim, (i + 1) * dim), j * dim));
  await ref.add(rows);
  const r = await ref.search(queries, k);
  const nq = queries.length / dim;
  return Array.from({ length: nq }, (_, q) => Array.from({ length: k }, (_, i) => live[Number(r.labels[q * k + i])]!));
}

for (const type of ['flat', 'ivf_simple'] as const) {
  test(`${type}: restore keeps deletes and upserts (snapshot + WAL, compacted), after SIGKILL and after a graceful stop`, async () => {
    const cluster = await startCluster(2);
    try {
      let client = await IndexClient.connect(cluster.discovery);
      const id = `keep-${type}`;
      const N = 2000;
      await client.createIndex(id, { indexBuilderType: type, dim, metric: 'l2', centroids: 8, nprobe: 8, trainNum: 400 });
      const base = data.base(N);
      const ids = Array.from({ length: N }, (_, i) => i);
      await client.addIndexData(id, base, ids.map((i) => ({ i })), { ids });
      await until('trained', async () => (await client.getState(id)) === IndexState.TRAINED && (await client.getNtotal(id)) === N);
      // Before the snapshot: delete 0..299, compact (the snapshot holds a compacted FAISS index).
      await client.delete(id, ids.slice(0, 300));
      await client.compact(id);
      await client.saveIndex(id);
      // After it (WAL only): delete 300..399, upsert 400..409 with new metadata.
      await client.delete(id, ids.slice(300, 400));
      await client.upsert(id, ids.slice(400, 410), base.subarray(400 * dim, 410 * dim), ids.slice(400, 410).map((i) => ({ i, v: 2 })));
      const live = ids.slice(400);
      const queries = data.queries(15);
      const want = await reference(base, live, queries, 6);
      const check = async (label: string): Promise<void> => {
        await until(`${label}: ntotal`, async () => (await client.getNtotal(id)) === live.length);
        const r = await client.search(id, queries, 6);
        assert.deepEqual(r.ids, want, label);
        const got = await client.get(id, [5, 350, 405, 1999]);
        assert.deepEqual(got.unknown, [5, 350], label);
        assert.deepEqual(got.records.map((x) => x.metadata), [{ i: 405, v: 2 }, { i: 1999 }], label);
        let listed = 0;
        for await (const page of client.iterate(id, { batchSize: 500, returnEmbeddings: false })) listed += page.records.length;
        assert.equal(listed, live.length, label);
      };
      await check('live');
      await client.close();
      for (const r of [0, 1]) await cluster.kill(r, 'SIGKILL');
      for (const r of [0, 1]) await cluster.start(r, ['--load-index']);
      client = await IndexClient.connect(cluster.discovery);
      await check('after SIGKILL');
      // Compact what the WAL replay brought back, snapshot, stop gracefully, restore again.
      await client.compact(id);
      await client.saveIndex(id);
      await client.close();
      for (const r of [0, 1]) await cluster.kill(r, 'SIGTERM');
      for (const r of [0, 1]) await cluster.start(r, ['--load-index']);
      client = await IndexClient.connect(cluster.discovery);
      await check('after a graceful restart');
      await client.close();
    } finally {
      await cluster.stop();
    }
  });
}

test('mass delete: 19,000 of 20,000 records deleted in batches; search stays exact and FAISS shrinks to the live vectors', async () => {
  const cluster = await startCluster(2);
  try {
    const client = await IndexClient.connect(cluster.discovery);
    const N = 20_000;
    await client.createIndex('mass', { indexBuilderType: 'flat', dim, metric: 'l2' });
    const base = data.base(N);
    const ids = Array.from({ length: N }, (_, i) => i);
    for (let off = 0; off < N; off += 5000) await client.addIndexData('mass', base.subarray(off * dim, (off + 5000) * dim), undefined, { ids: ids.slice(off, off + 5000) });
    await client.syncTrain('mass');
    await until('indexed', async () => (await client.getNtotal('mass')) === N);
    const queries = data.queries(10);
    const keep = ids.filter((i) => i % 20 === 0);
    const gone = ids.filter((i) => i % 20 !== 0);
    for (let off = 0; off < gone.length; off += 1000) {
      const r = await client.delete('mass', gone.slice(off, off + 1000));
      assert.equal(r.deleted, Math.min(1000, gone.length - off));
      // Searches in between never return a deleted record.
      const hits = await client.search('mass', queries, 5);
      const deletedUpTo = gone[Math.min(off + 999, gone.length - 1)]!;
      for (const row of hits.ids!) for (const x of row) assert.ok((x as number) % 20 === 0 || (x as number) > deletedUpTo, `deleted ${x} returned`);
    }
    assert.equal(await client.getNtotal('mass'), keep.length);
    assert.deepEqual((await client.search('mass', queries, 5)).ids, await reference(base, keep, queries, 5));
    // The background compaction (batched: dead vectors >= 1/64 of the index) shrank FAISS.
    await client.compact('mass'); // whatever is below the threshold
    const status = await client.status();
    const faiss = status.map((s) => (s.indexes as Record<string, { faissNtotal: number; awaitingCompaction: number }>).mass!);
    assert.equal(faiss.reduce((a, s) => a + s.faissNtotal, 0), keep.length);
    assert.ok(faiss.every((s) => s.awaitingCompaction === 0));
    assert.deepEqual((await client.search('mass', queries, 5)).ids, await reference(base, keep, queries, 5));
    await client.close();
  } finally {
    await cluster.stop();
  }
});

test('a home server down: upsert stores the other parts, names the failed server, never places a record elsewhere; the retry completes it', async () => {
  const cluster = await startCluster(2);
  try {
    let client = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 100, callTimeoutMs: 10_000 });
    await client.createIndex('home', { indexBuilderType: 'flat', dim, metric: 'l2', saveIntervalSec: 0 });
    const ids = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const base = data.base(40);
    await client.upsert('home', ids, base, ids.map((id) => ({ id, v: 1 })));
    await client.syncTrain('home');
    await until('indexed', async () => (await client.getNtotal('home')) === 40);
    await cluster.kill(1, 'SIGKILL');
    await assert.rejects(client.upsert('home', ids, base, ids.map((id) => ({ id, v: 2 }))), (e: unknown) => e instanceof Error && e.name === 'ServerUnavailableError' && /home server/.test(e.message) && /retry with upsert/.test(e.message));
    await client.close();
    await cluster.start(1, ['--load-index']); // on a new port: a new client
    client = await IndexClient.connect(cluster.discovery);
    await until('server 1 back', async () => (await client.getNtotal('home')) === 40);
    // Before the retry: each record is v1 (its server was down) or v2 (its server was up), exactly once.
    const mid = await client.get('home', ids);
    assert.equal(mid.records.length, 40);
    const v2 = new Set(mid.records.filter((r) => (r.metadata as { v: number }).v === 2).map((r) => r.id));
    assert.ok(v2.size > 0 && v2.size < 40, `some records on the live server were replaced (${v2.size})`);
    await client.upsert('home', ids, base, ids.map((id) => ({ id, v: 2 })));
    const after = await client.get('home', ids);
    assert.deepEqual(after.records.map((r) => (r.metadata as { v: number }).v), new Array(40).fill(2));
    let listed = 0;
    for await (const page of client.iterate('home', { returnEmbeddings: false })) listed += page.records.length;
    assert.equal(listed, 40, 'every record once, on one server');
    await client.close();
  } finally {
    await cluster.stop();
  }
});
