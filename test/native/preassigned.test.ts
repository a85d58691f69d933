// Quantize once (issue 15): quantize() + searchPreassigned() against real FAISS give exactly
// what search() gives, for every IVF type that allows it; the others refuse clearly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaissIndex, getOmpNumThreads, setOmpNumThreads } from '../../src/native/index.js';
import { FaissError, ValidationError } from '../../src/errors.js';
import { syntheticDataset } from '../helpers/data.js';

const dim = 32;
const base = syntheticDataset({ n: 6000, dim, clusters: 24, seed: 3 });
const queries = syntheticDataset({ n: 150, dim, clusters: 24, seed: 4 });

async function built(factory: string, metric: 'l2' | 'dot', data = base): Promise<FaissIndex> {
  const index = FaissIndex.fromFactory(dim, factory, metric);
  await index.train(data);
  await index.add(data);
  await index.setParameter('nprobe', 8);
  return index;
}

/** One FAISS thread: IndexIVF::search then runs the quantizer over the whole batch, as quantize() does. */
async function oneThread(fn: () => Promise<void>): Promise<void> {
  const before = getOmpNumThreads();
  setOmpNumThreads(1);
  try {
    await fn();
  } finally {
    setOmpNumThreads(before);
  }
}

for (const [factory, metric] of [['IVF64,Flat', 'l2'], ['IVF64,Flat', 'dot'], ['IVF64,SQ8', 'l2'], ['IVF64,PQ8x8np', 'l2'], ['IVF64,PQ8', 'l2'], ['IVF64,PQ8', 'dot']] as const) {
  test(`${factory} (${metric}): searchPreassigned with quantize()'s lists equals search, ids and distances`, () =>
    oneThread(async () => {
      const index = await built(factory, metric);
      assert.equal(index.preassignRefusal, '');
      const k = 10;
      const want = await index.search(queries, k);
      const lists = await index.quantize(queries, index.nprobe);
      assert.equal(lists.nprobe, 8);
      assert.equal(lists.assign.length, 150 * 8);
      const got = await index.searchPreassigned(queries, k, lists);
      assert.deepEqual(got.labels, want.labels);
      assert.deepEqual(got.distances, want.distances);
      const inline = index.searchPreassignedInline(queries, k, lists);
      assert.ok(inline);
      assert.deepEqual(inline.labels, want.labels);
      assert.deepEqual(inline.distances, want.distances);
      // A per-call probe count and max_codes: the lists' width is the probe count.
      const want4 = await index.search(queries, k, { nprobe: 3, maxCodes: 200 });
      const got4 = await index.searchPreassigned(queries, k, await index.quantize(queries, 3), { maxCodes: 200 });
      assert.deepEqual(got4.labels, want4.labels);
      assert.deepEqual(got4.distances, want4.distances);
      // The probe lists matter: other lists give other hits.
      const shifted = { ...lists, assign: lists.assign.map((l) => (l + 1n) % 64n) };
      assert.notDeepEqual((await index.searchPreassigned(queries, k, shifted)).labels, want.labels);
    }));
}

test('nprobe above nlist is capped at nlist, as search does', async () => {
  const index = await built('IVF64,Flat', 'l2');
  const lists = await index.quantize(queries.subarray(0, 2 * dim), 500);
  assert.equal(lists.nprobe, 64);
  assert.ok([...lists.assign].every((l) => l >= 0n && l < 64n));
});

test('quantizerFingerprint: equal for the same trained state, different for another training', async () => {
  const a = await built('IVF64,Flat', 'l2');
  const b = await built('IVF64,Flat', 'l2', base.subarray(0, 3000 * dim)); // trained on other vectors
  const c = FaissIndex.fromFactory(dim, 'IVF64,Flat', 'l2');
  await c.installTrainedState(await a.exportTrained());
  const fa = await a.quantizerFingerprint();
  assert.ok(fa && fa.length >= 16);
  assert.equal(await c.quantizerFingerprint(), fa);
  assert.notEqual(await b.quantizerFingerprint(), fa);
  // The same centroids under the other metric answer other probe lists.
  const d = FaissIndex.fromFactory(dim, 'IVF64,Flat', 'dot');
  await d.installTrainedState(await a.exportTrained());
  assert.notEqual(await d.quantizerFingerprint(), fa);
});

for (const [factory, why] of [
  ['IVF64,PQ8x4fs', /fast-scan/],
  ['PCA16,IVF64,Flat', /pre-transform/],
  ['IVF64_HNSW8,Flat', /quantizer is not flat/],
  ['Flat', /not a plain IVF/],
  ['HNSW16', /not a plain IVF/],
] as const) {
  test(`${factory} refuses quantize and searchPreassigned, saying why`, async () => {
    const index = FaissIndex.fromFactory(dim, factory, 'l2');
    if (!index.isTrained) await index.train(base);
    await index.add(base.subarray(0, 1000 * dim));
    assert.match(index.preassignRefusal, why);
    assert.equal(await index.quantizerFingerprint(), null);
    await assert.rejects(index.quantize(queries, 4), (e: Error) => e instanceof FaissError && why.test(e.message));
    if (index.nlist > 0) {
      const lists = { nprobe: 4, assign: new BigInt64Array(150 * 4), coarse: new Float32Array(150 * 4) };
      await assert.rejects(index.searchPreassigned(queries, 5, lists), (e: Error) => e instanceof FaissError && why.test(e.message));
    }
  });
}

test('an untrained IVF index refuses quantize', async () => {
  const index = FaissIndex.fromFactory(dim, 'IVF64,Flat', 'l2');
  assert.match(index.preassignRefusal, /not trained/);
  await assert.rejects(index.quantize(queries, 4), /not trained/);
});

test('bad probe lists are refused, naming the field', async () => {
  const index = await built('IVF64,Flat', 'l2');
  const q = queries.subarray(0, 3 * dim);
  const good = await index.quantize(q, 4);
  const bad = (lists: object, field: RegExp) =>
    assert.rejects(index.searchPreassigned(q, 5, { ...good, ...lists }), (e: Error) => e instanceof ValidationError && field.test(e.message));
  await bad({ assign: good.assign.map((l, i) => (i === 5 ? 64n : l)) }, /assign\[5\]/);
  await bad({ assign: good.assign.map((l, i) => (i === 2 ? -2n : l)) }, /assign\[2\]/);
  await bad({ assign: good.assign.subarray(1) }, /assign/);
  await bad({ assign: Array.from(good.assign) }, /assign/);
  await bad({ coarse: new Float32Array(5) }, /coarse/);
  await bad({ coarse: good.coarse.map((d, i) => (i === 1 ? NaN : d)) }, /coarse\[1\]/);
  await bad({ nprobe: 0 }, /nprobe/);
  await bad({ nprobe: 65 }, /nprobe/);
  await assert.rejects(index.quantize(q, 0), /nprobe/);
  // The index still answers.
  assert.equal((await index.searchPreassigned(q, 5, good)).labels.length, 15);
});
