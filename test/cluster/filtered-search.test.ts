// Server-side filtered search (issue 17) with real servers: for Flat, IVF-Flat, IVF-SQ,
// IVF-PQ and HNSW-SQ over 120k records, filters admitting 50%, 5%, 0.5% and 0.01% return
// the exact filtered top-k (Flat) or a recall above a floor (printed), and k hits whenever k
// matches exist; validation errors name the path; delete and iterate by filter; filtered
// search after kill -9 + restart. One cluster and one data set for every case.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ValidationError, type Filter } from '../../src/index.js';
import { exactSearch } from '../../src/datasets/exact.js';
import { syntheticClusters } from '../helpers/data.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { runCli } from '../helpers/cli.js';

const dim = 16;
const N = 120_000;
const K = 10;
const NQ = 20;
const { data: base } = syntheticClusters({ n: N, dim, clusters: 64, seed: 21, spread: 0.15 });
const queries = syntheticClusters({ n: NQ, dim, clusters: 64, seed: 21, spread: 0.15 }).data.map((v, i) => v + (((i * 31) % 17) - 8) * 2e-3);
const LANGS = ['en', 'de', 'fr', 'ja'];
/** Record i: bucket b = i % 10000 sets the selectivity; lang and year for mixed filters. */
const meta = (i: number) => ({ b: i % 10_000, lang: LANGS[i % 4], year: 2000 + (i % 25), nested: { odd: i % 2 === 1 } });
const ids = Array.from({ length: N }, (_, i) => i);

/** The filters of the matrix: their share of the records, and the records they admit (for the exact answer). */
const SELECTIVITIES: Array<{ name: string; filter: Filter; admits: (i: number) => boolean }> = [
  { name: '50%', filter: { b: { $lt: 5000 } }, admits: (i) => i % 10_000 < 5000 },
  { name: '5%', filter: { $and: [{ b: { $gte: 1000 } }, { b: { $lt: 1500 } }] }, admits: (i) => i % 10_000 >= 1000 && i % 10_000 < 1500 },
  { name: '0.5%', filter: { b: { $in: Array.from({ length: 50 }, (_, j) => j * 7) } }, admits: (i) => i % 10_000 % 7 === 0 && i % 10_000 < 350 },
  { name: '0.01%', filter: { b: 4321, 'nested.odd': true }, admits: (i) => i % 10_000 === 4321 },
  { name: '3 records (< k)', filter: { $id: { $in: [5, 60_005, 119_999, 'nope'] } }, admits: (i) => i === 5 || i === 60_005 || i === 119_999 },
];

const TYPES: Array<{ name: string; id: string; cfg: Record<string, unknown>; floor: number }> = [
  { name: 'Flat', id: 'fs-flat', cfg: { indexBuilderType: 'flat', indexedFields: ['b', 'nested.odd'] }, floor: 1 },
  { name: 'IVF-Flat', id: 'fs-ivf', cfg: { indexBuilderType: 'ivf_simple', centroids: 256, nprobe: 8 }, floor: 0.9 },
  { name: 'IVF-SQ', id: 'fs-ivfsq', cfg: { indexBuilderType: 'ivfsq', centroids: 256, nprobe: 8, indexedFields: ['b'] }, floor: 0.85 },
  { name: 'IVF-PQ', id: 'fs-ivfpq', cfg: { indexBuilderType: 'knnlm', centroids: 256, nprobe: 8, codeSize: 8, bitsPerVector: 8 }, floor: 0.7 },
  { name: 'HNSW-SQ', id: 'fs-hnsw', cfg: { indexBuilderType: 'hnswsq', nprobe: 64, storeN: 16, efConstruction: 40, indexedFields: ['b'] }, floor: 0.85 },
];

let cluster: TestCluster;
let client: IndexClient;
before(async () => {
  cluster = await startCluster(2);
  client = await IndexClient.connect(cluster.discovery);
});
after(async () => {
  await client?.close();
  await cluster?.stop();
});

async function fill(id: string, cfg: Record<string, unknown>, n = N): Promise<void> {
  await client.createIndex(id, { dim, metric: 'l2', trainNum: 20_000, ...cfg });
  const bs = 20_000;
  for (let i = 0; i < n; i += bs) {
    const m = Math.min(bs, n - i);
    await client.addIndexData(id, base.subarray(i * dim, (i + m) * dim), Array.from({ length: m }, (_, j) => meta(i + j)), { ids: ids.slice(i, i + m) });
  }
  await client.trainingSettled(id);
  await client.syncTrain(id);
  for (let t = 0; (await client.getState(id)) !== IndexState.TRAINED || (await client.getNtotal(id)) !== n; t++) {
    assert.ok(t < 6000, `${id} never indexed all ${n} records`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The exact filtered top-k of every query, as record ids. */
function exactFiltered(admits: (i: number) => boolean, n = N): number[][] {
  const keep = Array.from({ length: n }, (_, i) => i).filter(admits);
  const rows = new Float32Array(keep.length * dim);
  keep.forEach((i, j) => rows.set(base.subarray(i * dim, (i + 1) * dim), j * dim));
  const r = exactSearch(rows, queries, dim, K, 'l2');
  return Array.from({ length: NQ }, (_, q) => Array.from(r.labels.subarray(q * K, (q + 1) * K)).filter((l) => l >= 0n).map((l) => keep[Number(l)]!));
}

const exact = new Map<string, number[][]>();
const counts = new Map<string, number>();
for (const s of SELECTIVITIES) {
  exact.set(s.name, exactFiltered(s.admits));
  counts.set(s.name, ids.filter(s.admits).length);
}

for (const t of TYPES) {
  test(`${t.name}: filtered top-k over ${N / 1000}k records at every selectivity has min(k, matches) hits and recall >= ${t.floor}`, { timeout: 600_000 }, async () => {
    await fill(t.id, t.cfg);
    const lines: string[] = [];
    for (const s of SELECTIVITIES) {
      const r = await client.search(t.id, queries, K, { filter: s.filter });
      const want = exact.get(s.name)!;
      const matches = counts.get(s.name)!;
      assert.equal(r.matches, matches, `${s.name}: matches reported`);
      let found = 0;
      let total = 0;
      r.ids!.forEach((row, q) => {
        assert.equal(row.length, Math.min(K, matches), `${t.name} ${s.name} query ${q}: ${row.length} hits, ${matches} matches`);
        for (const id of row) assert.ok(s.admits(id as number), `${t.name} ${s.name}: hit ${id} does not pass the filter`);
        assert.deepEqual(r.metadata[q], row.map((id) => meta(id as number)), 'each hit carries its own metadata');
        found += row.filter((id) => want[q]!.includes(id as number)).length;
        total += want[q]!.length;
      });
      const recall = found / total;
      lines.push(`${s.name}: recall ${recall.toFixed(3)}`);
      if (t.floor === 1) {
        assert.deepEqual(r.ids, want, `${t.name} ${s.name}: the exact filtered top-k`);
      } else {
        assert.ok(recall >= t.floor, `${t.name} ${s.name}: recall ${recall} below ${t.floor}`);
      }
      // Fewer matches than k: all of them, whatever the index type.
      if (matches <= K) assert.equal(recall, 1, `${t.name} ${s.name}: every match comes back`);
    }
    // How each shard searched (the reply says): a walk with a selector for half the records
    // (Flat: always its matches exactly), the matches exactly for 0.01%.
    const { RpcClient } = await import('../../src/protocol/index.js');
    const raw = await RpcClient.connect('127.0.0.1', cluster.servers[0]!.port);
    try {
      const how = async (f: Filter) => (await raw.call('search', { indexId: t.id, k: K, filter: f }, [queries])).result as { filtered: { strategy: string; matches: number } };
      const half = await how(SELECTIVITIES[0]!.filter);
      assert.equal(half.filtered.strategy, t.id === 'fs-flat' ? 'exact' : 'selector', `${t.name} 50%`);
      assert.ok(Math.abs(half.filtered.matches - N / 4) < N / 40, 'about half of this server\'s records');
      assert.equal((await how(SELECTIVITIES[3]!.filter)).filtered.strategy, 'exact', `${t.name} 0.01%`);
    } finally {
      await raw.close();
    }
    console.log(`${t.name} (${JSON.stringify(t.cfg)}): ${lines.join(', ')}`);
    if (t.id !== 'fs-flat') await client.dropIndex(t.id); // keep memory low; Flat stays for the next tests
  });
}

test('per-call search parameters combine with a filter (a wider IVF walk: recall does not fall)', { timeout: 300_000 }, async () => {
  await fill('fs-ivf2', { indexBuilderType: 'ivf_simple', centroids: 256, nprobe: 1 }, 40_000);
  const s = SELECTIVITIES[1]!; // 5%
  const want = exactFiltered(s.admits, 40_000);
  const recall = (rows: Array<Array<unknown>>) => rows.reduce((a, row, q) => a + row.filter((id) => want[q]!.includes(id as number)).length, 0) / (NQ * K);
  const narrow = await client.search('fs-ivf2', queries, K, { filter: s.filter });
  const wide = await client.search('fs-ivf2', queries, K, { filter: s.filter, params: { nprobe: 256 } });
  console.log(`IVF-Flat 40k, 5%: recall ${recall(narrow.ids!)} at the index's nprobe 1 (widened as needed), ${recall(wide.ids!)} at nprobe 256`);
  for (const row of narrow.ids!) assert.equal(row.length, K);
  assert.equal(recall(wide.ids!), 1, 'nprobe = nlist is exact');
  assert.ok(recall(narrow.ids!) >= 0.5);
  await client.dropIndex('fs-ivf2');
});

test('filter validation: the client and the server name the path inside the filter and what was expected', { timeout: 60_000 }, async () => {
  // The server roots its paths at the call's arguments: 'args.filter...'.
  const named = (field: string, expected: RegExp) => (e: unknown) => e instanceof ValidationError && (e.field === field || e.field === `args.${field}`) && expected.test(e.message);
  await assert.rejects(client.search('fs-flat', queries, K, { filter: { b: { $gt: [1] } } as unknown as Filter }), named('filter.b.$gt', /finite number or a string/));
  await assert.rejects(client.search('fs-flat', queries, K, { filter: { $or: [{ b: 1 }, { lang: { $regex: 'x' } }] } as unknown as Filter }), named('filter.$or[1].lang.$regex', /one of the operators/));
  await assert.rejects(client.delete('fs-flat', { filter: { $and: {} } as unknown as Filter }), named('filter.$and', /non-empty array/));
  await assert.rejects(async () => {
    for await (const _ of client.iterate('fs-flat', { filter: { year: { $exists: 'yes' } } as unknown as Filter })) break;
  }, named('filter.year.$exists', /true or false/));
  // The server checks on its own (a client that skips the check: a raw call), and stays up.
  const { RpcClient } = await import('../../src/protocol/index.js');
  const raw = await RpcClient.connect('127.0.0.1', cluster.servers[0]!.port);
  try {
    await assert.rejects(raw.call('search', { indexId: 'fs-flat', k: 5, filter: { b: { $in: 'x' } } }, [queries]), named('filter.b.$in', /an array/));
    await assert.rejects(raw.call('search', { indexId: 'fs-flat', k: 5, filter: { $gt: 1 } }, [queries]), named('filter.$gt', /inside a field/));
    await assert.rejects(raw.call('deleteRecords', { indexId: 'fs-flat', ids: [1], filter: { b: 1 } }), (e: unknown) => e instanceof ValidationError && /exactly one/.test(e.message));
    let deep: unknown = { b: 1 };
    for (let i = 0; i < 40; i++) deep = { $not: deep }; // beyond 32 (the filter limit), within the envelope's 64
    await assert.rejects(raw.call('search', { indexId: 'fs-flat', k: 5, filter: deep }, [queries]), (e: unknown) => e instanceof ValidationError && /nested at most 32/.test(e.message));
  } finally {
    await raw.close();
  }
  const ok = await client.search('fs-flat', queries, K, { filter: { lang: 'en' } });
  assert.equal(ok.ids!.length, NQ, 'the servers still answer');
});

test('dfaiss search --filter: JSON on the command line; a bad filter names the flag and the path', { timeout: 60_000 }, async () => {
  const ok = await runCli(['search', '--discovery-config', cluster.discovery, '--index-id', 'fs-flat', '--random', '2', '-k', '5', '--json', '--filter', '{"b": 4321, "nested.odd": true}']);
  assert.equal(ok.code, 0, ok.stderr);
  const out = JSON.parse(ok.stdout) as { matches: number; results: Array<{ hits: Array<{ id: number; metadata: { b: number } }> }> };
  assert.equal(out.matches, 12);
  for (const r of out.results) {
    assert.equal(r.hits.length, 5);
    for (const h of r.hits) assert.equal(h.metadata.b, 4321);
  }
  const bad = await runCli(['search', '--discovery-config', cluster.discovery, '--index-id', 'fs-flat', '--random', '1', '--filter', '{"year": {"$gt": [2000]}}']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--filter\.year\.\$gt.*finite number or a string/);
  const notJson = await runCli(['search', '--discovery-config', cluster.discovery, '--index-id', 'fs-flat', '--random', '1', '--filter', "{lang: 'en'}"]);
  assert.notEqual(notJson.code, 0);
  assert.match(notJson.stderr, /--filter expects a JSON filter/);
});

test('iterate and delete by filter; upsert moves a record between filters; deleted records never match', { timeout: 300_000 }, async () => {
  const n = 20_000;
  await fill('fs-rec', { indexBuilderType: 'flat', indexedFields: ['lang'] }, n);
  const idsOf = async (filter: Filter, batchSize = 500) => {
    const out: number[] = [];
    for await (const page of client.iterate('fs-rec', { filter, batchSize, returnEmbeddings: false })) for (const r of page.records) out.push(r.id as number);
    return out.sort((a, b) => a - b);
  };
  const expect = (admits: (i: number) => boolean) => Array.from({ length: n }, (_, i) => i).filter(admits);
  assert.deepEqual(await idsOf({ b: { $gte: 9990 } }, 3), expect((i) => i % 10_000 >= 9990), 'a sparse filter over small pages');
  assert.deepEqual(await idsOf({ lang: 'de', year: { $lte: 2001 } }), expect((i) => i % 4 === 1 && i % 25 <= 1));
  // Delete by filter: the count, then no search, iterate or get sees them.
  const del = await client.delete('fs-rec', { filter: { lang: 'fr', b: { $lt: 2000 } } });
  const gone = expect((i) => i % 4 === 2 && i % 10_000 < 2000);
  assert.equal(del.deleted, gone.length);
  assert.deepEqual(await idsOf({ lang: 'fr', b: { $lt: 2000 } }), []);
  const after = await client.search('fs-rec', queries, K, { filter: { lang: 'fr' } });
  for (const row of after.ids!) {
    assert.equal(row.length, K);
    for (const id of row) assert.ok(!gone.includes(id as number), `deleted record ${id} came back`);
  }
  assert.equal(after.matches, expect((i) => i % 4 === 2).length - gone.length, 'deleted records are not counted as matches');
  assert.equal((await client.get('fs-rec', gone.slice(0, 10))).records.length, 0);
  assert.equal((await client.delete('fs-rec', { filter: { lang: 'fr', b: { $lt: 2000 } } })).deleted, 0, 'a second delete finds nothing');
  // Upsert: the new version's metadata decides; the old one no longer matches.
  await client.upsert('fs-rec', [3], base.subarray(3 * dim, 4 * dim), [{ b: 777_777, lang: 'xx' }]);
  assert.deepEqual(await idsOf({ b: 777_777 }), [3]);
  assert.ok(!(await idsOf({ b: 3 })).includes(3));
  const hit = await client.search('fs-rec', base.subarray(3 * dim, 4 * dim), 1, { filter: { lang: 'xx' } });
  assert.deepEqual(hit.ids, [[3]]);
  assert.deepEqual((await client.search('fs-rec', base.subarray(3 * dim, 4 * dim), 5, { filter: { lang: 'ja', $id: 3 } })).ids, [[]], 'old version gone');
  // Durability: the same filtered answers after every server is killed with SIGKILL and restarted.
  const before = await client.search('fs-rec', queries, K, { filter: { lang: { $in: ['fr', 'xx'] } } });
  const iterBefore = await idsOf({ b: { $lt: 100 } });
  await client.close();
  for (const r of [0, 1]) await cluster.kill(r, 'SIGKILL');
  for (const r of [0, 1]) await cluster.start(r, ['--load-index']);
  client = await IndexClient.connect(cluster.discovery);
  for (let t = 0; (await client.getNtotal('fs-rec')) !== n - gone.length; t++) {
    assert.ok(t < 3000, 'restored');
    await new Promise((r) => setTimeout(r, 20));
  }
  const again = await client.search('fs-rec', queries, K, { filter: { lang: { $in: ['fr', 'xx'] } } });
  assert.deepEqual(again.ids, before.ids, 'the same filtered hits after kill -9 and restart');
  assert.equal(again.matches, before.matches);
  assert.deepEqual(await idsOf({ b: { $lt: 100 } }), iterBefore);
  assert.deepEqual(await idsOf({ b: 777_777 }), [3], 'the upsert survived');
});

test('delete by filter on an index without ids is refused, naming the filter', { timeout: 60_000 }, async () => {
  await client.createIndex('fs-anon', { dim, metric: 'l2', indexBuilderType: 'flat' });
  await client.addIndexData('fs-anon', base.subarray(0, 100 * dim), Array.from({ length: 100 }, (_, i) => meta(i)));
  await assert.rejects(client.delete('fs-anon', { filter: { b: 1 } }), (e: unknown) => e instanceof ValidationError && e.field === 'filter' && /records have ids/.test(e.message));
  // Search and iterate by filter work without ids.
  for (let t = 0; (await client.getNtotal('fs-anon')) !== 100; t++) await new Promise((r) => setTimeout(r, 20));
  const r = await client.search('fs-anon', queries, 3, { filter: { lang: 'de' } });
  for (const row of r.metadata) for (const m of row) assert.equal((m as { lang: string }).lang, 'de');
  await client.dropIndex('fs-anon');
});

test('forced selector walks (DFAISS_FILTER_EXACT_MAX=0) start wide enough or widen until every query has k hits: IVF nprobe 1 and HNSW over 0.03%', { timeout: 300_000 }, async () => {
  const n = 40_000;
  await fill('fs-wivf', { indexBuilderType: 'ivf_simple', centroids: 128, nprobe: 1 }, n);
  await fill('fs-whnsw', { indexBuilderType: 'hnswsq', nprobe: 16, storeN: 16, efConstruction: 40 }, n);
  await client.saveIndex('fs-wivf');
  await client.saveIndex('fs-whnsw');
  await client.close();
  // Restarted with the test hook: every filtered search on these types walks with the selector.
  for (const r of [0, 1]) await cluster.kill(r, 'SIGTERM');
  for (const r of [0, 1]) await cluster.start(r, ['--load-index'], { DFAISS_FILTER_EXACT_MAX: '0' });
  client = await IndexClient.connect(cluster.discovery);
  const { RpcClient } = await import('../../src/protocol/index.js');
  const raw = await RpcClient.connect('127.0.0.1', cluster.servers[0]!.port);
  try {
    const filter: Filter = { b: { $in: [11, 22, 33] } }; // 12 records of 40k (0.03%), 6 per server
    const admits = (i: number) => [11, 22, 33].includes(i % 10_000);
    const want = exactFiltered(admits, n);
    for (const id of ['fs-wivf', 'fs-whnsw']) {
      for (let t = 0; (await client.getNtotal(id)) !== n; t++) {
        assert.ok(t < 3000, `${id} restored`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const how = (await raw.call('search', { indexId: id, k: K, filter }, [queries])).result as { filtered: { strategy: string; widenings: number; exactFallback: number; matches: number } };
      assert.equal(how.filtered.strategy, 'selector', id);
      const r = await client.search(id, queries, K, { filter });
      r.ids!.forEach((row, q) => {
        assert.equal(row.length, K, `${id} query ${q}`);
        if (id === 'fs-wivf') assert.deepEqual(row, want[q], 'IVF-Flat widened to every list: exact');
        for (const hit of row) assert.ok(admits(hit as number));
      });
      console.log(`${id}: ${JSON.stringify(how.filtered)} on server 0`);
    }
  } finally {
    await raw.close();
  }
});
