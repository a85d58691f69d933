/**
 * IndexClient's own logic (placement, merge, failover, allowPartial, the filter loop)
 * against in-process shards: real servers' code and real FAISS behind LocalShards, no
 * processes, no sockets. The real-process cluster tests cover the same paths over the wire.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient } from '../../src/client/index-client.js';
import { exactSearch } from '../../src/datasets/exact.js';
import { ServerUnavailableError, ValidationError } from '../../src/errors.js';
import { syntheticDataset } from '../helpers/data.js';
import { localShards, type FlakyShard } from '../helpers/local-shards.js';
import type { IndexClientOptions } from '../../src/client/api.js';

const dim = 8;
const data = syntheticDataset({ n: 300, dim, seed: 7 });
const rows = (from: number, to: number): Float32Array => data.subarray(from * dim, to * dim);
const metaOf = (from: number, to: number): Array<[number, number]> => Array.from({ length: to - from }, (_, j) => [from + j, (from + j) % 3]);
const flat = { indexBuilderType: 'flat' as const, dim, metric: 'l2' as const };

/** Adds rows [0, n) in batches of 10, metadata [row, row % 3]; then waits until they are in FAISS unless told not to. */
async function addRows(client: IndexClient, indexId: string, n: number, settle = true): Promise<void> {
  for (let b = 0; b < n; b += 10) await client.addIndexData(indexId, rows(b, b + 10), metaOf(b, b + 10));
  if (settle) await client.addBufferToIndex(indexId);
}

/** Exact top-k over the given rows of `data`: per query, [row, score]. */
function exact(ids: readonly number[], queries: Float32Array, k: number): Array<Array<[number, number]>> {
  const base = new Float32Array(ids.length * dim);
  ids.forEach((id, i) => base.set(rows(id, id + 1), i * dim));
  const r = exactSearch(base, queries, dim, k, 'l2');
  const nq = queries.length / dim;
  return Array.from({ length: nq }, (_, q) => Array.from({ length: k }, (_, j) => [ids[Number(r.labels[q * k + j])]!, r.distances[q * k + j]!] as [number, number]));
}

/** Runs `fn` with a client over `n` fresh in-process shards; closes both after. */
async function withShards(n: number, fn: (client: IndexClient, shards: FlakyShard[]) => Promise<void>, opts: IndexClientOptions = {}): Promise<void> {
  const local = localShards(n);
  const client = IndexClient.withShards(local.shards, opts);
  try {
    await fn(client, local.shards);
  } finally {
    await client.close();
    await local.close();
  }
}

function hitsOf(r: { metadata: unknown[][]; scores: number[][] }): Array<Array<[number, number]>> {
  return r.metadata.map((row, q) => row.map((m, j) => [(m as [number, number])[0], r.scores[q]![j]!] as [number, number]));
}

function assertSameHits(got: Array<Array<[number, number]>>, want: Array<Array<[number, number]>>): void {
  assert.deepEqual(got.map((q) => q.map(([id]) => id)), want.map((q) => q.map(([id]) => id)));
  got.forEach((q, i) => q.forEach(([, s], j) => assert.ok(Math.abs(s - want[i]![j]![1]) < 1e-4, `score of hit ${j} of query ${i}`)));
}

test('placement: batches go round-robin, one server each, and every shard ends up with a third', async () => {
  await withShards(3, async (client, shards) => {
    await client.createIndex('place', flat);
    await addRows(client, 'place', 300);
    const status = await client.status();
    assert.deepEqual(status.map((s) => s.indexes.place!.total), [100, 100, 100]);
    assert.deepEqual(shards.map((s) => s.calls.get('addIndexData')), [10, 10, 10]);
    assert.equal(await client.getNtotal('place'), 300);
  });
});

test('merge: the fan-out search returns the exact global top-k with each hit\'s metadata', async () => {
  await withShards(3, async (client, shards) => {
    await client.createIndex('merge', flat);
    await addRows(client, 'merge', 300);
    const queries = rows(40, 45);
    const r = await client.search('merge', queries, 7);
    assertSameHits(hitsOf(r), exact(Array.from({ length: 300 }, (_, i) => i), queries, 7));
    assert.equal(r.missing, undefined, 'no missing list without allowPartial');
  });
});

test('failover: a down server is skipped by placement; search fails naming it, or with allowPartial lists it as missing', async () => {
  await withShards(3, async (client, shards) => {
    await client.createIndex('down', flat);
    shards[1]!.down = true;
    await addRows(client, 'down', 90, false);
    shards[1]!.down = false;
    await client.addBufferToIndex('down'); // into FAISS everywhere (server 1 holds nothing)
    shards[1]!.down = true;
    assert.equal(shards[1]!.calls.get('addIndexData') ?? 0, 0, 'nothing reached the down server');
    assert.deepEqual(client.pendingRevocations, [], 'a server that was down never held a batch: nothing to revoke');
    const queries = rows(3, 5);
    await assert.rejects(client.search('down', queries, 5), (err: unknown) => err instanceof ServerUnavailableError && err.message.includes(shards[1]!.name));
    const partial = await client.search('down', queries, 5, { allowPartial: true });
    assert.deepEqual(partial.missing?.map((m) => m.server), [shards[1]!.name]);
    assertSameHits(hitsOf(partial), exact(Array.from({ length: 90 }, (_, i) => i), queries, 5));
    shards[1]!.down = false;
    const status = await client.status();
    assert.equal(status[0]!.indexes.down!.total + status[2]!.indexes.down!.total, 90);
    assert.equal(status[1]!.indexes.down!.total, 0);
  });
});

test('failover: a batch whose server failed while holding it moves on and is revoked there, so it counts once', async () => {
  await withShards(2, async (client, shards) => {
    await client.createIndex('moved', flat);
    shards[0]!.failAfter.add('addIndexData');
    await addRows(client, 'moved', 40);
    assert.equal(shards[0]!.calls.get('addIndexData'), 2, 'the two batches placed on server 0 reached it (and then moved on)');
    for (let i = 0; i < 100 && client.pendingRevocations.length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(client.pendingRevocations, [], 'the revocations were delivered');
    shards[0]!.failAfter.clear();
    assert.equal(await client.getNtotal('moved'), 40, 'each batch counts once');
    const r = await client.search('moved', rows(0, 40), 1);
    assert.deepEqual(r.metadata.map((m) => (m[0] as [number, number])[0]), Array.from({ length: 40 }, (_, i) => i), 'every vector finds itself');
  }, { reconnectIntervalMs: 50 });
});

test('failover: a server that answers with its own error fails the search, with or without allowPartial', async () => {
  await withShards(2, async (client, shards) => {
    await client.createIndex('err', flat);
    await addRows(client, 'err', 20);
    shards[1]!.answer.set('search', new ValidationError('k', 'a test refusal', 0));
    await assert.rejects(client.search('err', rows(0, 1), 3, { allowPartial: true }), ValidationError);
  });
});

test('filter: searchWithFilter fetches deeper until k hits pass, in exact order, for both filter forms', async () => {
  await withShards(3, async (client, shards) => {
    await client.createIndex('filter', flat);
    await addRows(client, 'filter', 300);
    const queries = rows(10, 13);
    const k = 12;
    const thirds = Array.from({ length: 100 }, (_, i) => 3 * i); // rows with row % 3 === 0
    const where = await client.searchWithFilter('filter', queries, k, { where: (m) => (m as [number, number])[1] === 0 });
    assertSameHits(hitsOf(where), exact(thirds, queries, k));
    // The original's form drops hits whose metadata[filterPos] equals filterValue.
    const dropped = await client.searchWithFilter('filter', queries, k, { filterPos: 1, filterValue: 0 });
    const others = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 3 !== 0);
    assertSameHits(hitsOf(dropped), exact(others, queries, k));
    // Fewer matches than k in the whole index: every match, and the loop ends.
    const rare = await client.searchWithFilter('filter', queries, k, { where: (m) => (m as [number, number])[0] < 5 });
    assert.deepEqual(rare.metadata.map((q) => q.map((m) => (m as [number, number])[0]).sort((a, b) => a - b)), [0, 1, 2].map(() => [0, 1, 2, 3, 4]));
  });
});

test('records: metadata null means none, with ids as without (hits carry null)', async () => {
  await withShards(2, async (client) => {
    await client.createIndex('nullmeta', flat);
    await client.addIndexData('nullmeta', rows(0, 20), null, { ids: Array.from({ length: 20 }, (_, i) => `r${i}`) });
    await client.addBufferToIndex('nullmeta');
    const r = await client.search('nullmeta', rows(3, 4), 1);
    assert.deepEqual(r.ids, [['r3']]);
    assert.deepEqual(r.metadata, [[null]]);
    await assert.rejects(client.addIndexData('nullmeta', rows(0, 2), [1], { ids: ['a', 'b'] }), ValidationError);
  });
});
