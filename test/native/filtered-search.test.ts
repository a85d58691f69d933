// Filtered search in the binding (issue 17): FAISS's IDSelectorBitmap through
// SearchParameters::sel, and the exact search over a subset of labels, on real FAISS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaissIndex } from '../../src/native/index.js';
import { Bits } from '../../src/filter/index.js';
import { exactSearch } from '../../src/datasets/exact.js';
import { syntheticClusters } from '../helpers/data.js';
import { prng } from '../../src/datasets/synthetic.js';

const dim = 16;
const n = 20_000;
const { data } = syntheticClusters({ n, dim, clusters: 32, seed: 3 });
const queries = syntheticClusters({ n: 8, dim, clusters: 32, seed: 3 }).data.map((v, i) => v + ((i * 7919) % 13) * 1e-3);

/** Labels kept with probability p (seeded), as bits and as a list. */
function subset(p: number, seed: number): { bits: Bits; list: number[] } {
  const r = prng(seed);
  const bits = new Bits(n);
  for (let i = 0; i < n; i++) if (r() < p) bits.set(i);
  return { bits, list: bits.toArray() };
}

function rows(list: number[]): Float32Array {
  const out = new Float32Array(list.length * dim);
  list.forEach((l, j) => out.set(data.subarray(l * dim, (l + 1) * dim), j * dim));
  return out;
}

/** The exact filtered top-k over raw vectors, as labels. */
function exactFiltered(list: number[], k: number, metric: 'l2' | 'dot'): bigint[][] {
  const r = exactSearch(rows(list), queries, dim, k, metric);
  return Array.from({ length: queries.length / dim }, (_, q) => Array.from(r.labels.subarray(q * k, (q + 1) * k), (j) => (j < 0n ? -1n : BigInt(list[Number(j)]!))));
}

function byQuery(labels: BigInt64Array, k: number): bigint[][] {
  return Array.from({ length: labels.length / k }, (_, q) => Array.from(labels.subarray(q * k, (q + 1) * k)));
}

for (const metric of ['l2', 'dot'] as const) {
  test(`Flat (${metric}): the selector and the subset search both equal the exact filtered top-k`, async () => {
    const index = FaissIndex.fromFactory(dim, 'Flat', metric);
    await index.add(data);
    assert.equal(index.selectorKind, 'flat');
    for (const p of [0.5, 0.05, 0.001]) {
      const { bits, list } = subset(p, 11);
      const want = exactFiltered(list, 10, metric);
      const sel = await index.searchSelected(queries, 10, bits.bytes);
      const sub = await index.searchSubset(queries, 10, BigInt64Array.from(list, BigInt));
      assert.deepEqual(byQuery(sel.labels, 10), want, `selector p=${p}`);
      assert.deepEqual(byQuery(sub.labels, 10), want, `subset p=${p}`);
      for (let i = 0; i < sel.distances.length; i++) assert.ok(Math.abs(sel.distances[i]! - sub.distances[i]!) <= 1e-4 * Math.max(1, Math.abs(sel.distances[i]!)));
    }
  });
}

for (const factory of ['IVF64,Flat', 'IVF64,SQfp16', 'IVF64,PQ8x8np', 'HNSW16,SQ8']) {
  test(`${factory}: only selected labels come back; the exhaustive walk equals the subset search`, async () => {
    const index = FaissIndex.fromFactory(dim, factory, 'l2');
    await index.train(data);
    await index.add(data);
    assert.equal(index.selectorKind, factory.startsWith('HNSW') ? 'hnsw' : 'ivf');
    const { bits, list } = subset(0.02, 5);
    const wide = factory.startsWith('HNSW') ? { efSearch: 4096 } : { nprobe: 64 };
    const sel = await index.searchSelected(queries, 10, bits.bytes, wide);
    for (const l of sel.labels) assert.ok(l === -1n || bits.has(Number(l)), `label ${l} is outside the selection`);
    const sub = await index.searchSubset(queries, 10, BigInt64Array.from(list, BigInt));
    for (const l of sub.labels) assert.ok(l >= 0n && bits.has(Number(l)));
    // Both rank by the index's own codes: the same hits (a tie may swap two neighbours).
    let same = 0;
    const a = byQuery(sel.labels, 10);
    const b = byQuery(sub.labels, 10);
    a.forEach((row, q) => (same += row.filter((l) => b[q]!.includes(l)).length));
    const share = same / sel.labels.length;
    console.log(`${factory}: selector at full width vs subset search: ${share.toFixed(3)} of hits shared`);
    assert.ok(share >= (factory.startsWith('HNSW') ? 0.9 : 0.98), `shared ${share}`);
    // A narrow walk over a sparse selection comes back short: the reason the shard widens it.
    const narrow = await index.searchSelected(queries, 10, subset(0.001, 9).bits.bytes, factory.startsWith('HNSW') ? { efSearch: 16 } : { nprobe: 1 });
    assert.ok(narrow.labels.some((l) => l === -1n), 'a narrow walk over 0.1% finds fewer than k');
  });
}

test('subset search: empty subset, k larger than the subset, and an IVF direct map built on first use', async () => {
  const index = FaissIndex.fromFactory(dim, 'IVF32,Flat', 'dot');
  await index.train(data);
  await index.add(data);
  const none = await index.searchSubset(queries, 5, new BigInt64Array(0));
  assert.ok(none.labels.every((l) => l === -1n));
  const three = await index.searchSubset(queries, 5, BigInt64Array.of(7n, 70n, 700n));
  for (const row of byQuery(three.labels, 5)) {
    assert.deepEqual([...row.slice(0, 3)].sort(), [7n, 70n, 700n].sort());
    assert.deepEqual(row.slice(3), [-1n, -1n]);
  }
  const want = exactFiltered([7, 70, 700], 3, 'dot');
  assert.deepEqual(byQuery(three.labels, 5).map((r) => r.slice(0, 3)), want);
});

test('per-call efSearch reaches HNSW (FAISS 1.7.3 searches with the index\'s own efSearch whatever SearchParametersHNSW says) and leaves the index default alone', async () => {
  const index = FaissIndex.fromFactory(dim, 'HNSW16', 'l2');
  await index.add(data);
  const far = syntheticClusters({ n: 8, dim, clusters: 32, seed: 4 }).data; // other centres: a hard walk
  const want = exactSearch(data, far, dim, 10, 'l2');
  const recall = (labels: BigInt64Array) => Array.from(labels).filter((l, i) => want.labels.subarray(Math.floor(i / 10) * 10, Math.floor(i / 10) * 10 + 10).includes(l)).length / labels.length;
  const narrow = recall((await index.search(far, 10, { efSearch: 16 })).labels);
  const wide = recall((await index.search(far, 10, { efSearch: 4096 })).labels);
  const again = recall((await index.search(far, 10)).labels);
  console.log(`HNSW16 recall: efSearch 16 per call ${narrow}, 4096 per call ${wide}, index default ${again}`);
  assert.ok(wide > narrow, `efSearch 4096 (${wide}) must beat 16 (${narrow})`);
  assert.equal(wide, 1);
  assert.equal(again, narrow, 'the default (16) is unchanged');
  const sel = await index.searchSelected(far, 10, Bits.full(n).bytes, { efSearch: 4096 });
  assert.equal(recall(sel.labels), 1);
});

test('per-call efSearch reaches an HNSW coarse quantizer (IVF..._HNSW: quantizer_efSearch) and leaves its default alone', async () => {
  const index = FaissIndex.fromFactory(dim, 'IVF1024_HNSW4,Flat', 'l2');
  await index.train(data);
  await index.add(data);
  await index.setParameter('nprobe', 4);
  await index.setParameter('quantizer_efSearch', 4);
  const far = syntheticClusters({ n: 200, dim, clusters: 32, seed: 4 }).data;
  const want = exactSearch(data, far, dim, 10, 'l2');
  const recall = (labels: BigInt64Array) => Array.from(labels).filter((l, i) => want.labels.subarray(Math.floor(i / 10) * 10, Math.floor(i / 10) * 10 + 10).includes(l)).length / labels.length;
  const narrow = recall((await index.search(far, 10)).labels);
  const wide = recall((await index.search(far, 10, { efSearch: 1024 })).labels);
  const again = recall((await index.search(far, 10)).labels);
  console.log(`IVF1024_HNSW4 nprobe 4 recall: quantizer efSearch 4 (default) ${narrow}, 1024 per call ${wide}, default again ${again}`);
  assert.ok(wide > narrow, `quantizer efSearch 1024 (${wide}) must beat 4 (${narrow})`);
  assert.equal(again, narrow, 'the default (4) is unchanged');
});
