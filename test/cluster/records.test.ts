// Records with ids (issue 16) on real server processes: ids on hits, delete, upsert, get,
// iterate, range search, cosine, compaction, bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ValidationError } from '../../src/index.js';
import { RpcClient } from '../../src/protocol/index.js';
import { encodeMetadata, offsetsBytes } from '../../src/protocol/metadata.js';
import { homeOf } from '../../src/shard/records.js';
import { FaissIndex } from '../../src/native/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 16;
const data = new SyntheticDataset({ dim, seed: 5 });

async function waitTrained(client: IndexClient, id: string): Promise<void> {
  const end = Date.now() + 30_000;
  while ((await client.getState(id)) !== IndexState.TRAINED) {
    if (Date.now() > end) throw new Error('not TRAINED after 30 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until every server's buffer is in FAISS (ntotal = live records). */
async function waitIndexed(client: IndexClient, id: string, want: number): Promise<void> {
  const end = Date.now() + 30_000;
  while ((await client.getNtotal(id)) !== want) {
    if (Date.now() > end) throw new Error(`ntotal ${await client.getNtotal(id)}, want ${want}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let cluster: TestCluster;
test.before(async () => {
  cluster = await startCluster(3);
});
test.after(async () => {
  await cluster.stop();
});

for (const type of ['flat', 'ivf_simple'] as const) {
  test(`${type}: ids on hits; delete then search never returns the record; compaction keeps results exact`, async () => {
    const client = await IndexClient.connect(cluster.discovery);
    const id = `del-${type}`;
    const N = 3000;
    await client.createIndex(id, { indexBuilderType: type, dim, metric: 'l2', centroids: 8, nprobe: 8, trainNum: 600 });
    const base = data.base(N);
    const ids = Array.from({ length: N }, (_, i) => (i % 2 === 0 ? i : `doc-${i}`));
    for (let off = 0; off < N; off += 500) {
      await client.addIndexData(id, base.subarray(off * dim, (off + 500) * dim), ids.slice(off, off + 500).map((x) => ({ x })), { ids: ids.slice(off, off + 500) });
    }
    await waitTrained(client, id);
    await waitIndexed(client, id, N);
    const queries = data.queries(20);
    const before = await client.search(id, queries, 5);
    assert.ok(before.ids, 'hits carry ids');
    for (let q = 0; q < 20; q++) for (let i = 0; i < 5; i++) assert.deepEqual(before.metadata[q]![i], { x: before.ids![q]![i] });
    // Delete every first hit (and a few unknown ids): none of them may come back.
    const victims = [...new Set(before.ids!.map((row) => row[0]!))];
    const res = await client.delete(id, [...victims, 'no-such-id', 999_999]);
    assert.equal(res.deleted, victims.length);
    assert.deepEqual(res.unknown, ['no-such-id', 999_999]);
    const dead = new Set(victims);
    const check = async (label: string): Promise<void> => {
      const after = await client.search(id, queries, 5);
      // Exact reference over the survivors.
      const ref = FaissIndex.fromFactory(dim, 'Flat', 'l2');
      const live = ids.map((x, i) => [x, i] as const).filter(([x]) => !dead.has(x));
      const rows = new Float32Array(live.length * dim);
      live.forEach(([, i], j) => rows.set(base.subarray(i * dim, (i + 1) * dim), j * dim));
      await ref.add(rows);
      const want = await ref.search(queries, 5);
      for (let q = 0; q < 20; q++) {
        for (const x of after.ids![q]!) assert.ok(!dead.has(x!), `${label}: deleted ${x} returned`);
        assert.deepEqual(after.ids![q], Array.from({ length: 5 }, (_, i) => live[Number(want.labels[q * 5 + i])]![0]), `${label}: query ${q}`);
      }
    };
    await check('tombstoned');
    assert.equal(await client.getNtotal(id), N - victims.length);
    // Compaction removes them from FAISS; results stay exact (Flat renumbers, IVF keeps ids).
    assert.equal(await client.compact(id), victims.length);
    await check('compacted');
    // Adds after a compaction get correct ids too.
    const more = data.base(300, N);
    const moreIds = Array.from({ length: 300 }, (_, i) => `late-${i}`);
    await client.addIndexData(id, more, moreIds.map((x) => ({ x })), { ids: moreIds });
    await waitIndexed(client, id, N - victims.length + 300);
    const got = await client.get(id, ['late-7', victims[0]!, 'doc-1'], { returnEmbeddings: true });
    assert.deepEqual(got.unknown, [victims[0]]);
    assert.deepEqual(got.records.map((r) => [r.id, r.metadata]), [['late-7', { x: 'late-7' }], ['doc-1', { x: 'doc-1' }]]);
    assert.deepEqual([...got.records[0]!.embedding!], [...more.subarray(7 * dim, 8 * dim)]);
    assert.deepEqual([...got.records[1]!.embedding!], [...base.subarray(1 * dim, 2 * dim)]);
    await client.dropIndex(id);
    await client.close();
  });
}

test('upsert: replaces in place, get/iterate see only the new version; never two versions under concurrent searches', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  const searcher = await IndexClient.connect(cluster.discovery);
  const id = 'ups';
  const N = 200;
  await client.createIndex(id, { indexBuilderType: 'flat', dim, metric: 'l2' });
  const base = data.base(N);
  const ids = Array.from({ length: N }, (_, i) => `r${i}`);
  await client.addIndexData(id, base, ids.map((x) => ({ x, v: 0 })), { ids });
  await client.syncTrain(id); // flat: trains (a no-op) once asked, then adds its buffer
  await waitIndexed(client, id, N);
  // Every record is re-written with the same vector: a search for it must return it exactly once.
  const queries = base.subarray(0, 10 * dim);
  let stop = false;
  let searches = 0;
  const watch = (withVectors: boolean) => (async () => {
    while (!stop) {
      const r = await searcher.search(id, queries, 3, { returnEmbeddings: withVectors });
      searches++;
      for (let q = 0; q < 10; q++) {
        const seen = r.ids![q]!.filter((x) => x === `r${q}`).length;
        assert.equal(seen, 1, `query ${q}: record r${q} seen ${seen} times (${JSON.stringify(r.metadata[q])}, withVectors ${withVectors})`);
      }
    }
  })();
  const watchers = [watch(false), watch(true)];
  for (let v = 1; v <= 15; v++) {
    await client.upsert(id, ids.slice(0, 10), base.subarray(0, 10 * dim), ids.slice(0, 10).map((x) => ({ x, v })));
    // Resolved: reads see only the new version.
    const r = await client.search(id, queries, 1);
    for (let q = 0; q < 10; q++) assert.deepEqual(r.metadata[q]![0], { x: `r${q}`, v });
  }
  stop = true;
  await Promise.all(watchers);
  assert.ok(searches > 0);
  assert.equal(await client.getNtotal(id), N);
  const got = await client.get(id, ['r3', 'r150']);
  assert.deepEqual(got.records.map((r) => r.metadata), [{ x: 'r3', v: 15 }, { x: 'r150', v: 0 }]);
  // iterate: every record once, newest version, resumable from any cursor.
  const seen: unknown[] = [];
  let cursor = null;
  for await (const page of client.iterate(id, { batchSize: 37, returnEmbeddings: false })) {
    seen.push(...page.records.map((r) => r.id));
    cursor = page.cursor;
    if (seen.length >= 74) break;
  }
  for await (const page of client.iterate(id, { batchSize: 37, cursor })) {
    seen.push(...page.records.map((r) => r.id));
    for (const r of page.records) assert.equal(r.embedding?.length, dim);
  }
  assert.deepEqual([...seen].sort(), [...ids].sort());
  await client.dropIndex(id);
  await Promise.all([client.close(), searcher.close()]);
});

test('range search merges every shard per query; cosine scores are cosine similarities; HNSW refuses range search clearly', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  await client.createIndex('cos', { indexBuilderType: 'flat', dim, metric: 'cosine' });
  const base = data.base(600);
  const ids = Array.from({ length: 600 }, (_, i) => i);
  await client.addIndexData('cos', base, ids.map((i) => i), { ids });
  await client.syncTrain('cos');
  await waitIndexed(client, 'cos', 600);
  const queries = data.queries(4);
  const norm = (v: Float32Array): number => Math.hypot(...v);
  const cos = (a: Float32Array, b: Float32Array): number => a.reduce((s, x, i) => s + x * b[i]!, 0) / (norm(a) * norm(b));
  const r = await client.search('cos', queries, 5);
  for (let q = 0; q < 4; q++) {
    const qv = queries.subarray(q * dim, (q + 1) * dim);
    const all = ids.map((i) => cos(qv, base.subarray(i * dim, (i + 1) * dim)));
    const want = [...all.keys()].sort((a, b) => all[b]! - all[a]!).slice(0, 5);
    assert.deepEqual(r.ids![q], want);
    for (let i = 0; i < 5; i++) assert.ok(Math.abs(r.scores[q]![i]! - all[want[i]!]!) < 1e-4);
    const radius = all[want[4]!]! - 1e-5;
    const rr = await client.rangeSearch('cos', qv, radius);
    assert.deepEqual(rr.ids[0], want, 'range search = the hits above the radius, best first');
  }
  // Deleted records leave range results too.
  await client.delete('cos', [r.ids![0]![0]!]);
  const rr = await client.rangeSearch('cos', queries.subarray(0, dim), -1);
  assert.equal(rr.ids[0]!.length, 599);
  assert.ok(!rr.ids[0]!.includes(r.ids![0]![0]!));
  // float16 input is normalised too (after widening; the WAL keeps the float16).
  const half = new Uint16Array(dim).fill(0x4000); // 2.0 in every component
  await client.upsert('cos', [9999], half, ['half']);
  const hq = new Float32Array(dim).fill(1);
  const hh = await client.search('cos', hq, 1);
  assert.deepEqual(hh.ids![0], [9999]);
  assert.ok(Math.abs(hh.scores[0]![0]! - 1) < 1e-5, `cosine of parallel vectors is 1 (got ${hh.scores[0]![0]})`);
  await client.createIndex('hnsw', { indexBuilderType: null, faissFactory: 'HNSW8', dim, metric: 'l2' });
  await client.addIndexData('hnsw', base);
  await client.syncTrain('hnsw');
  await waitIndexed(client, 'hnsw', 600);
  await assert.rejects(client.rangeSearch('hnsw', queries, 1), /range search is not supported/);
  await client.dropIndex('cos');
  await client.dropIndex('hnsw');
  await client.close();
});

test('bad input: duplicate ids, mixing batches with and without ids, adds of stored ids, bad ids; nothing crashes a server', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  await client.createIndex('bad', { indexBuilderType: 'flat', dim, metric: 'l2' });
  const v = data.base(3);
  await assert.rejects(client.addIndexData('bad', v, undefined, { ids: ['a', 'b', 'a'] }), (e: unknown) => e instanceof ValidationError && /ids\[2\]/.test(e.message) && /duplicate/.test(e.message));
  await client.addIndexData('bad', v, undefined, { ids: ['a', 'b', 7] });
  await assert.rejects(client.addIndexData('bad', v), (e: unknown) => e instanceof ValidationError && /stores records with ids/.test(e.message));
  // A fresh client (no cached knowledge) is refused as well.
  const other = await IndexClient.connect(cluster.discovery);
  await assert.rejects(other.addIndexData('bad', v), /stores records with ids/);
  await assert.rejects(client.addIndexData('bad', v, undefined, { ids: ['x', 'b', 'y'] }), /1 stored already: .*b/);
  await assert.rejects(client.addIndexData('bad', v, undefined, { ids: ['x', 1.5, 'y'] }), (e: unknown) => e instanceof ValidationError && /ids\[1\]/.test(e.message));
  await assert.rejects(client.addIndexData('bad', v, undefined, { ids: ['x', ''] as string[] }), ValidationError);
  // Delete by filter (issue 17): a bad filter is a ValidationError naming its path; a good one deletes what it admits.
  await assert.rejects(client.delete('bad', { filter: { tag: { $bogus: 1 } } as never }), (e: unknown) => e instanceof ValidationError && e.field === 'filter.tag.$bogus');
  assert.deepEqual(await client.delete('bad', { filter: { tag: 1 } }), { deleted: 0, unknown: [] });
  await assert.rejects(client.get('bad', []), ValidationError);
  assert.deepEqual((await client.get('bad', ['zzz'])).unknown, ['zzz']);
  await client.createIndex('anon', { indexBuilderType: 'flat', dim, metric: 'l2' });
  await client.addIndexData('anon', v);
  await assert.rejects(other.addIndexData('anon', v, undefined, { ids: [1, 2, 3] }), /stores vectors without ids/);
  await assert.rejects(other.upsert('anon', [1, 2, 3], v), /stores vectors without ids/);
  assert.equal((await client.status()).length, 3, 'every server still up');
  // Iteration works on an index without ids too (ids null).
  const pages = [];
  for await (const page of client.iterate('anon', { batchSize: 2 })) pages.push(page.records.map((r) => r.id));
  assert.deepEqual(pages.flat(), [null, null, null]);
  await client.dropIndex('bad');
  await client.dropIndex('anon');
  await Promise.all([client.close(), other.close()]);
});

test('a range search with more hits than a server allows is refused with a ValidationError naming the radius; the server keeps serving', async () => {
  const small = await startCluster(1);
  try {
    await small.kill(0, 'SIGTERM');
    await small.start(0, [], { DFAISS_MAX_RANGE_HITS: '1000' });
    const client = await IndexClient.connect(small.discovery);
    await client.createIndex('wide', { indexBuilderType: 'flat', dim, metric: 'l2' });
    await client.addIndexData('wide', data.base(500));
    await client.syncTrain('wide');
    await waitIndexed(client, 'wide', 500);
    const ok = await client.rangeSearch('wide', data.queries(1), 1e30);
    assert.equal(ok.scores[0]!.length, 500);
    await assert.rejects(client.rangeSearch('wide', data.queries(3), 1e30), (e: unknown) => e instanceof ValidationError && /radius/.test(e.message) && /1000 hits/.test(e.message));
    assert.equal((await client.rangeSearch('wide', data.queries(2), 0)).scores.flat().length, 0);
    await client.close();
  } finally {
    await small.stop();
  }
});

test('raw requests with bad record arguments get ValidationErrors naming the field; the server keeps serving', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  await client.createIndex('rawbad', { indexBuilderType: 'flat', dim, metric: 'l2' });
  await client.upsert('rawbad', ['a', 'b'], data.base(2));
  const raw = await RpcClient.connect('127.0.0.1', cluster.servers[0]!.port);
  const v = data.base(2);
  const meta = encodeMetadata(undefined, 2);
  // Ids whose home (of 3 servers) is not rank 0: that server must refuse them.
  const notHome = Array.from({ length: 50 }, (_, i) => `n${i}`).filter((id) => homeOf(id, 3) !== 0);
  const add = (args: Record<string, unknown>) => raw.call('addIndexData', { indexId: 'rawbad', n: 2, ...args }, [v, meta.blob, offsetsBytes(meta.offsets)]);
  const cases: Array<[() => Promise<unknown>, RegExp]> = [
    [() => add({ ids: ['x'] }), /ids/],
    [() => add({ ids: ['x', 'x'] }), /ids\[1\]/],
    [() => add({ ids: [1.5, 2] }), /ids/],
    [() => add({ upsert: true }), /ids/],
    [() => add({ ids: [{}, 'y'] }), /ids/],
    [() => add({ ids: ['p', 'q'] }), /servers/],
    [() => add({ ids: [notHome[0], notHome[1]], servers: 3 }), /ids\[0\].*home is this server/],
    [() => add({ ids: ['p', 'q'], servers: 0 }), /servers/],
    [() => raw.call('deleteRecords', { indexId: 'rawbad', ids: 'a' }), /ids/],
    [() => raw.call('deleteRecords', { indexId: 'rawbad', ids: [null] }), /ids/],
    [() => raw.call('getRecords', { indexId: 'rawbad', ids: ['a'], withVectors: 'yes' }), /withVectors/],
    [() => raw.call('iterateRecords', { indexId: 'rawbad', after: -1, limit: 10 }), /after/],
    [() => raw.call('iterateRecords', { indexId: 'rawbad', after: 0, limit: 0 }), /limit/],
    [() => raw.call('rangeSearch', { indexId: 'rawbad', radius: 1 }, []), /attachment|queries/],
    [() => raw.call('rangeSearch', { indexId: 'rawbad', radius: 1 }, [new Float32Array(dim + 1)]), /queries/],
    [() => raw.call('compact', { indexId: 'rawbad', extra: 1 }), /extra|unrecognized/i],
  ];
  for (const [call, field] of cases) await assert.rejects(call(), (e: unknown) => e instanceof ValidationError && field.test(e.message), String(field));
  await raw.close();
  assert.deepEqual((await client.get('rawbad', ['a', 'b'])).records.map((r) => r.id), ['a', 'b']);
  await client.dropIndex('rawbad');
  await client.close();
});

test("cosine on an L2-only type (hnswsq): scores are still cosine similarities", async () => {
  const client = await IndexClient.connect(cluster.discovery);
  await client.createIndex('cos-hnsw', { indexBuilderType: 'hnswsq', dim, metric: 'cosine', trainNum: 300 });
  const base = data.base(300);
  const ids = Array.from({ length: 300 }, (_, i) => i);
  await client.addIndexData('cos-hnsw', base, undefined, { ids });
  await client.syncTrain('cos-hnsw');
  await waitTrained(client, 'cos-hnsw');
  await waitIndexed(client, 'cos-hnsw', 300);
  const q = base.subarray(5 * dim, 6 * dim);
  const r = await client.search('cos-hnsw', q, 3);
  assert.equal(r.ids![0]![0], 5);
  assert.ok(Math.abs(r.scores[0]![0]! - 1) < 0.02, `self-similarity ${r.scores[0]![0]}`);
  const norm = (v: Float32Array): number => Math.hypot(...v);
  for (let i = 1; i < 3; i++) {
    const other = base.subarray(Number(r.ids![0]![i]) * dim, (Number(r.ids![0]![i]) + 1) * dim);
    const want = q.reduce((s, x, j) => s + x * other[j]!, 0) / (norm(q) * norm(other));
    assert.ok(Math.abs(r.scores[0]![i]! - want) < 0.02, `score ${r.scores[0]![i]} vs cosine ${want}`);
  }
  assert.ok(r.scores[0]![0]! >= r.scores[0]![1]!, 'best first (larger is better)');
  await client.dropIndex('cos-hnsw');
  await client.close();
});
