// The FAISS binding against real FAISS: exactness, recall, parameters, persistence,
// concurrency, the event loop, and input validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaissIndex, dropFileCache, fp16ToFp32, fp16ToFp32Async, getOmpNumThreads, gpuAvailable, releasableBuffers, setOmpNumThreads } from '../../src/native/index.js';
import { FaissError, ValidationError } from '../../src/errors.js';
import { SyntheticDataset, prng } from '../../src/datasets/synthetic.js';
import { exactSearch, recallAtK } from '../../src/datasets/exact.js';

function uniform(n: number, dim: number, seed: number): Float32Array {
  const r = prng(seed);
  return Float32Array.from({ length: n * dim }, () => r() * 2 - 1);
}

for (const metric of ['l2', 'dot'] as const) {
  test(`Flat (${metric}) equals brute force in TypeScript`, async () => {
    const dim = 24;
    const base = uniform(3000, dim, 1);
    const queries = uniform(50, dim, 2);
    const index = FaissIndex.fromFactory(dim, 'Flat', metric);
    assert.equal(index.metric, metric);
    await index.add(base);
    const got = await index.search(queries, 10);
    const want = exactSearch(base, queries, dim, 10, metric);
    assert.deepEqual(got.labels, want.labels);
    for (let i = 0; i < want.distances.length; i++) {
      const w = want.distances[i]!;
      assert.ok(Math.abs(got.distances[i]! - w) <= 1e-4 * Math.max(1, Math.abs(w)), `score ${i}: ${got.distances[i]} vs ${w}`);
    }
  });
}

test('k larger than ntotal pads with id -1', async () => {
  const index = FaissIndex.fromFactory(4, 'Flat', 'l2');
  await index.add([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]]);
  const r = await index.search([[0.9, 1, 1, 1]], 5);
  assert.deepEqual([...r.labels], [1n, 0n, 2n, -1n, -1n]);
});

test('searchAndReconstruct returns the stored vectors of the hits; reconstruct by id', async () => {
  const dim = 8;
  const base = uniform(200, dim, 3);
  const index = FaissIndex.fromFactory(dim, 'Flat', 'l2');
  await index.add(base);
  const r = await index.searchAndReconstruct(base.subarray(5 * dim, 7 * dim), 3);
  assert.equal(r.labels[0], 5n);
  assert.equal(r.labels[3], 6n);
  for (let q = 0; q < 2; q++) {
    for (let h = 0; h < 3; h++) {
      const id = Number(r.labels[q * 3 + h]);
      assert.deepEqual(r.vectors.subarray((q * 3 + h) * dim, (q * 3 + h + 1) * dim), base.subarray(id * dim, (id + 1) * dim));
    }
  }
  const rec = await index.reconstruct([7, 9n]);
  assert.deepEqual(rec, Float32Array.from([...base.subarray(7 * dim, 8 * dim), ...base.subarray(9 * dim, 10 * dim)]));
});

test('IVF: reconstruct, removeIds, centroids, addWithIds; HNSW refuses removal with FAISS message', async () => {
  const data = new SyntheticDataset({ dim: 32, seed: 5 });
  const base = data.base(4000);
  const index = FaissIndex.fromFactory(32, 'IVF32,Flat', 'l2');
  assert.equal(index.isTrained, false);
  await assert.rejects(index.add(base), FaissError);
  await index.train(base);
  await index.add(base);
  const c = await index.centroids();
  assert.equal(c.nlist, 32);
  assert.equal(c.dim, 32);
  assert.equal(c.data.length, 32 * 32);
  assert.deepEqual(await index.reconstruct([10]), base.subarray(10 * 32, 11 * 32));
  assert.equal(await index.removeIds([10, 11, 999999]), 2);
  assert.equal(index.ntotal, 3998);
  await index.setParameter('nprobe', 32);
  const r = await index.search(base.subarray(10 * 32, 11 * 32), 1);
  assert.notEqual(r.labels[0], 10n);
  await index.addWithIds(base.subarray(0, 2 * 32), [100000, 100001n]);
  const again = await index.search(base.subarray(0, 32), 2);
  assert.ok(new Set(again.labels).has(100000n));

  const hnsw = FaissIndex.fromFactory(32, 'HNSW16', 'l2');
  await hnsw.add(base.subarray(0, 100 * 32));
  await assert.rejects(hnsw.removeIds([1]), (e: unknown) => e instanceof FaissError && /remove_ids not implemented/.test(e.message));
  await assert.rejects(hnsw.centroids(), /not an IVF index/);
});

test('PCA+IVF centroids live in the reduced space', async () => {
  const data = new SyntheticDataset({ dim: 64, seed: 6 });
  const index = FaissIndex.fromFactory(64, 'PCA16,IVF8,Flat', 'l2');
  await index.train(data.train(2000));
  const c = await index.centroids();
  assert.deepEqual([c.nlist, c.dim, c.data.length], [8, 16, 128]);
});

test('recall of IVF and HNSW against exact search on structured data; nprobe changes results', async () => {
  const dim = 64;
  const data = new SyntheticDataset({ dim, seed: 7, clusters: 100 });
  const base = data.base(20000);
  const queries = data.queries(100);
  const truth = exactSearch(base, queries, dim, 10, 'l2');

  const ivf = FaissIndex.fromFactory(dim, 'IVF128,Flat', 'l2');
  await ivf.train(base);
  await ivf.add(base);
  const r1 = recallAtK(truth.labels, (await ivf.search(queries, 10)).labels, 100, 10);
  await ivf.setParameter('nprobe', 64);
  const r64 = recallAtK(truth.labels, (await ivf.search(queries, 10)).labels, 100, 10);
  assert.ok(r64 >= 0.95, `IVF recall@10 at nprobe 64 = ${r64}`);
  assert.ok(r1 < r64 - 0.05, `nprobe 1 (${r1}) should be clearly worse than nprobe 64 (${r64})`);
  assert.deepEqual([...ivf.parameters], [['nprobe', 64]]);

  const hnsw = FaissIndex.fromFactory(dim, 'HNSW32', 'l2');
  await hnsw.add(base);
  await hnsw.setParameter('efSearch', 128);
  const rh = recallAtK(truth.labels, (await hnsw.search(queries, 10)).labels, 100, 10);
  assert.ok(rh >= 0.95, `HNSW recall@10 at efSearch 128 = ${rh}`);
});

test('write/read through a file and a Buffer give identical search results', async () => {
  const dim = 32;
  const data = new SyntheticDataset({ dim, seed: 8 });
  const base = data.base(3000);
  const queries = data.queries(20);
  const index = FaissIndex.fromFactory(dim, 'IVF16,PQ8np', 'dot');
  await index.train(base);
  await index.add(base);
  await index.setParameter('nprobe', 4);
  const before = await index.search(queries, 5);

  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-test-'));
  try {
    const path = join(dir, 'index.faiss');
    await index.writeFile(path);
    const fromFile = await FaissIndex.readFile(path);
    assert.equal(fromFile.metric, 'dot');
    assert.equal(fromFile.ntotal, 3000);
    await fromFile.setParameter('nprobe', 4); // search parameters are not part of the file
    const a = await fromFile.search(queries, 5);
    assert.deepEqual(a.labels, before.labels);
    assert.deepEqual(a.distances, before.distances);

    const fromBuf = await FaissIndex.fromBuffer(await index.toBuffer());
    await fromBuf.setParameter('nprobe', 4);
    const b = await fromBuf.search(queries, 5);
    assert.deepEqual(b.labels, before.labels);
    assert.deepEqual(b.distances, before.distances);
    await assert.rejects(FaissIndex.readFile(join(dir, 'missing.faiss')), FaissError);
    await assert.rejects(FaissIndex.fromBuffer(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), FaissError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the event loop keeps ticking during a multi-second train', async () => {
  const dim = 64;
  const data = new SyntheticDataset({ dim, seed: 9 });
  const train = data.train(60000);
  const index = FaissIndex.fromFactory(dim, 'IVF1024,Flat', 'l2');
  let ticks = 0;
  let maxGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
  }, 10);
  const t0 = performance.now();
  await index.train(train);
  const elapsed = performance.now() - t0;
  clearInterval(timer);
  assert.ok(elapsed > 500, `train took only ${elapsed.toFixed(0)} ms; the check needs a long call`);
  assert.ok(ticks >= elapsed / 10 / 3, `only ${ticks} ticks in ${elapsed.toFixed(0)} ms`);
  assert.ok(maxGap < 250, `event loop stalled for ${maxGap.toFixed(0)} ms`);
});

test('concurrent searches overlap with exclusive adds without corrupting the index', async () => {
  const dim = 16;
  const base = uniform(20000, dim, 10);
  const index = FaissIndex.fromFactory(dim, 'Flat', 'l2');
  await index.add(base.subarray(0, 1000 * dim));
  const ops: Promise<unknown>[] = [];
  const seen: number[] = [];
  for (let i = 1; i < 20; i++) {
    ops.push(index.add(base.subarray(i * 1000 * dim, (i + 1) * 1000 * dim)));
    for (let j = 0; j < 3; j++) {
      ops.push(index.search(base.subarray(0, 10 * dim), 3).then((r) => {
        assert.equal(r.labels[0], 0n);
        seen.push(index.ntotal);
      }));
    }
  }
  await Promise.all(ops);
  assert.equal(index.ntotal, 20000);
  const r = await index.search(base.subarray(19999 * dim), 1);
  assert.equal(r.labels[0], 19999n);
});

test('the native finiteness scan finds the first NaN or Infinity at any position (SIMD blocks and tail)', async () => {
  const dim = 7;
  const n = 37; // 259 values: 8 SIMD blocks of 32 and a tail of 3
  const index = FaissIndex.fromFactory(dim, 'Flat', 'l2');
  const ok = Float32Array.from({ length: n * dim }, (_, i) => (i % 5 === 0 ? 3.4e38 : i % 5 === 1 ? -1e-45 : i % 5 === 2 ? -0 : i));
  await index.add(ok); // the largest finite float, denormals and -0 are finite
  for (const at of [0, 31, 32, 33, 100, 255, 256, 258]) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = ok.slice();
      x[at] = bad;
      if (at < 258) x[258] = NaN; // a later one must not be reported instead
      const field = `x[${Math.floor(at / dim)}][${at % dim}]`;
      await assert.rejects(index.add(x), (e: unknown) => e instanceof ValidationError && e.message.includes(`invalid ${field}: expected a finite number`), `${bad} at ${at}`);
    }
  }
  assert.equal(index.ntotal, n);
});

test('bad inputs get ValidationError naming the field', async () => {
  const index = FaissIndex.fromFactory(4, 'Flat', 'l2');
  await index.add([[1, 2, 3, 4]]);
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['dim', () => FaissIndex.fromFactory(0, 'Flat'), /invalid dim: expected a positive integer/],
    ['metric', () => FaissIndex.fromFactory(4, 'Flat', 'cosine' as never), /invalid metric: expected 'dot' or 'l2'/],
    ['description', () => FaissIndex.fromFactory(4, ''), /invalid description/],
    ['length', () => index.add(new Float32Array(6)), /invalid x: expected a Float32Array whose length is a multiple of dim=4/],
    ['row', () => index.add([[1, 2, 3]]), /invalid x\[0\]: expected a vector of dim=4/],
    ['empty', () => index.add(new Float32Array(0)), /invalid x: expected at least one vector/],
    ['nan', () => index.add([[1, NaN, 3, 4]]), /invalid x\[0\]\[1\]: expected a finite number/],
    ['inf', () => index.search([[1, 2, Infinity, 4]], 1), /invalid queries\[0\]\[2\]: expected a finite number/],
    ['k0', () => index.search([[1, 2, 3, 4]], 0), /invalid k: expected an integer between 1/],
    ['kfrac', () => index.search([[1, 2, 3, 4]], 1.5), /invalid k/],
    ['khuge', () => index.search([[1, 2, 3, 4]], 1e12), /invalid k/],
    ['param', () => index.setParameter('nprobe', NaN), /invalid nprobe: expected a finite number/],
    ['ids', () => index.reconstruct([1.5]), /invalid ids\[0\]: expected an integer/],
  ];
  for (const [name, fn, re] of cases) {
    await assert.rejects(async () => fn(), (e: unknown) => e instanceof ValidationError && re.test(e.message), name);
  }
  await assert.rejects(async () => FaissIndex.fromFactory(4, 'IVFxx,Flat'), (e: unknown) => e instanceof FaissError && /could not parse index string/.test(e.message));
  await assert.rejects(index.setParameter('noSuchParameter', 1), (e: unknown) => e instanceof FaissError && /could not set parameter noSuchParameter/.test(e.message));
  assert.equal(index.ntotal, 1, 'failed calls left the index untouched');
});

test('GPU factory strings fail clearly on this FAISS build', () => {
  assert.equal(gpuAvailable, false);
  assert.throws(() => FaissIndex.fromFactory(8, 'GPUIVF16,Flat'), /no GPU support/);
});

test('fp16 -> fp32 conversion matches a reference for all 65536 bit patterns', async () => {
  const src = new Uint16Array(65536).map((_, i) => i);
  const ref = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) {
    const s = i & 0x8000 ? -1 : 1;
    const e = (i >> 10) & 0x1f;
    const m = i & 0x3ff;
    ref[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  const sync = fp16ToFp32(src);
  const asyncOut = await fp16ToFp32Async(src, new Float32Array(65536));
  for (let i = 0; i < 65536; i++) {
    assert.ok(Object.is(sync[i], ref[i]) || (Number.isNaN(sync[i]) && Number.isNaN(ref[i])), `pattern ${i}: ${sync[i]} vs ${ref[i]}`);
  }
  assert.deepEqual(asyncOut, sync);
  assert.throws(() => fp16ToFp32(src, new Float32Array(10)), /invalid dst/);
});

test('thread count is set for FAISS worker threads', async () => {
  setOmpNumThreads(1);
  assert.equal(getOmpNumThreads(), 1);
  setOmpNumThreads(0);
  assert.ok(getOmpNumThreads() >= 1);
});

test('recall on real data: Fashion-MNIST (784-d images)', async (t) => {
  const { fashionMnistAvailable, loadFashionMnist } = await import('../../src/datasets/fashion-mnist.js');
  if (!fashionMnistAvailable()) {
    t.skip('dataset-fashion-mnist is not installed (scripts/setup.sh installs it)');
    return;
  }
  const { dim, train, test: queries } = loadFashionMnist({ trainLimit: 10000, testLimit: 50 });
  const truth = exactSearch(train, queries, dim, 10, 'l2');
  const ivf = FaissIndex.fromFactory(dim, 'IVF64,Flat', 'l2');
  await ivf.train(train);
  await ivf.add(train);
  await ivf.setParameter('nprobe', 16);
  const r = recallAtK(truth.labels, (await ivf.search(queries, 10)).labels, 50, 10);
  assert.ok(r >= 0.9, `IVF64 nprobe 16 recall@10 on Fashion-MNIST = ${r}`);
});

test('CRC-32C matches the standard check value and chains across pieces', async () => {
  const { crc32Update } = await import('../../src/shard/crc.js');
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(crc32Update(0, enc('123456789')), 0xe3069283);
  assert.equal(crc32Update(crc32Update(0, enc('12345')), enc('6789')), 0xe3069283);
  assert.equal(crc32Update(0xe3069283, new Uint8Array(new ArrayBuffer(0))), 0xe3069283, 'empty pieces keep the running value');
  const odd = new Uint8Array(1001).map((_, i) => i * 7);
  assert.equal(crc32Update(0, odd.subarray(3)), crc32Update(crc32Update(0, odd.subarray(3, 500)), odd.subarray(500)));
});

test('searchInline: the same results as search() on the calling thread; null while a write holds the index', async () => {
  const dim = 16;
  const data = new SyntheticDataset({ dim, seed: 5 });
  const index = FaissIndex.fromFactory(dim, 'IVF8,Flat', 'l2');
  await index.train(data.base(2000));
  await index.add(data.base(2000));
  await index.setParameter('nprobe', 3);
  assert.equal(index.nprobe, 3);
  assert.equal(index.nlist, 8);
  const q = data.queries(5);
  const inline = index.searchInline(q, 7);
  assert.ok(inline);
  const async_ = await index.search(q, 7);
  assert.deepEqual(inline.labels, async_.labels);
  assert.deepEqual(inline.distances, async_.distances);
  // An add in progress (or queued) holds the write lock: no inline search, no blocking.
  const adding = index.add(data.base(20_000, 2000));
  assert.equal(index.searchInline(q, 7), null);
  await adding;
  assert.ok(index.searchInline(q, 7));
  assert.throws(() => index.searchInline(q, 0), ValidationError);
  assert.throws(() => index.searchInline(new Float32Array(dim + 1), 1), ValidationError);
  assert.equal(FaissIndex.fromFactory(dim, 'Flat', 'l2').nprobe, -1);
});

test('releasableBuffers: free returns the memory at once and empties every view', () => {
  const rssAnonKiB = (): number => Number(/RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
  const before = rssAnonKiB();
  const bufs = Array.from({ length: 8 }, () => releasableBuffers.allocate(4 << 20));
  for (const b of bufs) b.fill(7);
  const view = new Float32Array(bufs[0]!.buffer, 8, 4);
  const touched = rssAnonKiB();
  assert.ok(touched - before >= 30 * 1024, `32 MiB touched: RssAnon +${touched - before} KiB`);
  for (const b of bufs) releasableBuffers.free(b);
  assert.ok(touched - rssAnonKiB() >= 30 * 1024, `freed without a GC: RssAnon ${touched} -> ${rssAnonKiB()} KiB`);
  assert.equal(bufs[0]!.length, 0);
  assert.equal(view.length, 0);
  releasableBuffers.free(bufs[0]!); // a second free is a no-op
  releasableBuffers.free(new Uint8Array(16)); // not ours: left alone
});

test('a Flat index grown by many adds stays exact, and a mass removal hands its freed pages back without a copy', async () => {
  const rssAnonKiB = (): number => Number(/RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
  const dim = 64;
  const index = FaissIndex.fromFactory(dim, 'Flat', 'l2');
  const batches = Array.from({ length: 40 }, (_, b) => uniform(8000, dim, 100 + b)); // 80 MiB of codes in 40 adds
  for (const b of batches) await index.add(b);
  const all = new Float32Array(batches.length * 8000 * dim);
  batches.forEach((b, i) => all.set(b, i * b.length));
  const queries = uniform(20, dim, 99);
  assert.deepEqual((await index.search(queries, 5)).labels, exactSearch(all, queries, dim, 5, 'l2').labels);
  const before = rssAnonKiB();
  const drop = 240_000; // the first three quarters
  assert.equal(await index.removeIds(BigInt64Array.from({ length: drop }, (_, i) => BigInt(i))), drop);
  const after = rssAnonKiB();
  assert.ok(before - after >= 50 * 1024, `removing 60 MiB of codes returns them: RssAnon ${before} -> ${after} KiB`);
  const rest = all.subarray(drop * dim);
  assert.deepEqual((await index.search(queries, 5)).labels, exactSearch(rest, queries, dim, 5, 'l2').labels);
  // Growing again into the released pages: they read as zeros to FAISS, which overwrites them.
  const more = uniform(100_000, dim, 7);
  await index.add(more);
  const both = new Float32Array(rest.length + more.length);
  both.set(rest);
  both.set(more, rest.length);
  assert.deepEqual((await index.search(queries, 5)).labels, exactSearch(both, queries, dim, 5, 'l2').labels);
});

test('dropFileCache drops written pages of a file, which still reads back the same; a bad fd answers false', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-fadvise-'));
  try {
    const path = join(dir, 'f');
    const data = Buffer.from(uniform(1 << 16, 4, 3).buffer);
    writeFileSync(path, data);
    const fd = openSync(path, 'r+');
    try {
      fsyncSync(fd);
      assert.equal(dropFileCache(fd, 0, data.length), true);
    } finally {
      closeSync(fd);
    }
    assert.ok(readFileSync(path).equals(data));
    assert.equal(dropFileCache(1 << 20, 0, 4096), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('trained state: an index trained from another one\'s exported state searches identically, for every shareable type; other layouts refuse', async () => {
  const dim = 16;
  const data = new SyntheticDataset({ dim, seed: 8 });
  const base = data.base(3000);
  const q = data.queries(20);
  setOmpNumThreads(1); // HNSW graph construction is only deterministic single-threaded
  try {
    for (const f of ['IVF16,Flat', 'IVF16,SQfp16', 'IVF16,SQ8', 'IVF16,PQ4x4', 'IVF16,PQ4x4fs', 'HNSW8,SQ8', 'PCA8,IVF16,Flat', 'OPQ4,IVF16,PQ4x4', 'SQ4', 'PQ4x4']) {
      const a = FaissIndex.fromFactory(dim, f, 'l2');
      const b = FaissIndex.fromFactory(dim, f, 'l2');
      assert.ok(a.trainedLayout, `${f} is shareable`);
      await a.train(base);
      const state = await a.exportTrained();
      assert.deepEqual(state.layout, b.trainedLayout, `${f}: the layout is fixed by the structure`);
      await b.installTrainedState(state);
      assert.equal(b.isTrained, true, f);
      await assert.rejects(b.installTrainedState(state), FaissError, `${f}: trained already`);
      for (const ix of [a, b]) await ix.add(base);
      const [ra, rb] = await Promise.all([a.search(q, 10), b.search(q, 10)]);
      assert.deepEqual(rb.labels, ra.labels, f);
      assert.deepEqual(rb.distances, ra.distances, f);
    }
  } finally {
    setOmpNumThreads(0);
  }
  assert.equal(FaissIndex.fromFactory(dim, 'IVF16_HNSW8,Flat', 'l2').trainedLayout, null, 'an HNSW coarse quantizer trains per shard');
  const a = FaissIndex.fromFactory(dim, 'IVF16,PQ4x4', 'l2');
  await a.train(base);
  const state = await a.exportTrained();
  const other = FaissIndex.fromFactory(dim, 'IVF16,Flat', 'l2');
  await assert.rejects(other.installTrainedState(state), (e: Error) => e instanceof ValidationError && /layout/.test(e.message));
  const fresh = () => FaissIndex.fromFactory(dim, 'IVF16,PQ4x4', 'l2');
  await assert.rejects(fresh().installTrainedState({ layout: state.layout, data: state.data.subarray(1) }), ValidationError);
  await assert.rejects(fresh().installTrainedState({ layout: state.layout, data: Float32Array.from(state.data, (v, i) => (i === 7 ? NaN : v)) }), ValidationError);
});

test('train({ sortRows }): the same rows in any order train the same state; the rows are sorted in place', async () => {
  const dim = 16;
  const rows = new SyntheticDataset({ dim, seed: 9 }).base(2000);
  // The same rows in another order: reversed in blocks of 100, as another placement would stage them.
  const shuffled = new Float32Array(rows.length);
  for (let b = 0; b < 20; b++) shuffled.set(rows.subarray(b * 100 * dim, (b + 1) * 100 * dim), (19 - b) * 100 * dim);
  const unsortedInputs = [rows.slice(), shuffled.slice()];
  setOmpNumThreads(1);
  try {
    const states = [];
    for (const x of [rows.slice(), shuffled]) {
      const ix = FaissIndex.fromFactory(dim, 'IVF16,PQ4x4', 'l2');
      await ix.train(x, { sortRows: true });
      for (let i = 1; i < 2000; i++) {
        const a = x.subarray((i - 1) * dim, i * dim);
        const b = x.subarray(i * dim, (i + 1) * dim);
        const j = a.findIndex((v, k) => v !== b[k]);
        assert.ok(j < 0 || a[j]! < b[j]!, `row ${i - 1} sorts before row ${i}`);
      }
      states.push((await ix.exportTrained()).data);
    }
    assert.deepEqual(states[1], states[0], 'the trained state depends only on the set of rows');
    const unsorted = [];
    for (const x of unsortedInputs) {
      const ix = FaissIndex.fromFactory(dim, 'IVF16,PQ4x4', 'l2');
      await ix.train(x);
      unsorted.push((await ix.exportTrained()).data);
    }
    assert.notDeepEqual(unsorted[1], unsorted[0], 'without sortRows the order matters (k-means seeds by position)');
  } finally {
    setOmpNumThreads(0);
  }
});

test('train: an IVF-Flat or IVF-PQ given more rows than FAISS trains on gets a seeded subset of that size, moved to the front in place (FAISS copies nothing); others read every row', async () => {
  const dim = 8;
  const rowsOf = (x: Float32Array): string[] => Array.from({ length: x.length / dim }, (_, i) => x.subarray(i * dim, (i + 1) * dim).join(',')).sort();
  setOmpNumThreads(1);
  try {
    // IVF4: k-means on at most 4 x 256 rows; PQ2x4: codebooks on at most 256 x 16.
    for (const [factory, cap] of [['IVF4,Flat', 1024], ['IVF4,PQ2x4', 4096]] as const) {
      const x = new SyntheticDataset({ dim, seed: 5 }).base(cap * 3);
      const before = rowsOf(x);
      const ix = FaissIndex.fromFactory(dim, factory, 'l2');
      await ix.train(x, { sortRows: true });
      assert.deepEqual(rowsOf(x), before, `${factory}: the same rows, reordered`);
      // At exactly the cap FAISS takes every row as given: the same state means the first cap rows were the training set.
      const again = FaissIndex.fromFactory(dim, factory, 'l2');
      await again.train(x.slice(0, cap * dim));
      assert.deepEqual((await again.exportTrained()).data, (await ix.exportTrained()).data, `${factory} trained on the first ${cap} rows`);
    }
    // SQ trains on every row: the rows are only sorted.
    const x = new SyntheticDataset({ dim, seed: 6 }).base(3000);
    await FaissIndex.fromFactory(dim, 'IVF4,SQ8', 'l2').train(x, { sortRows: true });
    for (let i = 1; i < 3000; i++) {
      const a = x.subarray((i - 1) * dim, i * dim);
      const b = x.subarray(i * dim, (i + 1) * dim);
      const j = a.findIndex((v, k) => v !== b[k]);
      assert.ok(j < 0 || a[j]! < b[j]!, `IVF4,SQ8: row ${i - 1} sorts before row ${i}`);
    }
  } finally {
    setOmpNumThreads(0);
  }
});

test('assign + reserveLists + addPreassigned: the same index as add(); bad list numbers refused; IVF only', async () => {
  const dim = 16;
  const data = new SyntheticDataset({ dim, seed: 12 });
  const base = data.base(4000);
  const a = FaissIndex.fromFactory(dim, 'IVF32,Flat', 'l2');
  await a.train(base);
  const b = FaissIndex.fromFactory(dim, 'IVF32,Flat', 'l2');
  await b.installTrainedState(await a.exportTrained());
  assert.equal(b.isIvf, true);
  await a.add(base);
  const assign = await b.assign(base);
  const counts = new Uint32Array(32);
  for (const l of assign) counts[Number(l)]!++;
  await b.reserveLists(counts);
  await b.addPreassigned(base.subarray(0, 1000 * dim), assign.subarray(0, 1000));
  await b.addPreassigned(base.subarray(1000 * dim), assign.subarray(1000));
  assert.equal(b.ntotal, 4000);
  for (const ix of [a, b]) await ix.setParameter('nprobe', 4);
  const q = data.queries(10);
  const [ra, rb] = await Promise.all([a.search(q, 5), b.search(q, 5)]);
  assert.deepEqual(rb.labels, ra.labels);
  assert.deepEqual(rb.distances, ra.distances);
  await assert.rejects(b.addPreassigned(base.subarray(0, dim), BigInt64Array.of(32n)), FaissError);
  await assert.rejects(b.addPreassigned(base.subarray(0, dim), BigInt64Array.of(-1n)), FaissError);
  await assert.rejects(b.addPreassigned(base.subarray(0, 2 * dim), BigInt64Array.of(0n)), ValidationError);
  await assert.rejects(b.reserveLists(new Uint32Array(3)), ValidationError);
  assert.equal(b.ntotal, 4000, 'refused adds added nothing');
  const flat = FaissIndex.fromFactory(dim, 'Flat', 'l2');
  assert.equal(flat.isIvf, false);
  await assert.rejects(flat.assign(base.subarray(0, dim)), FaissError);
});

test('fast-scan IVF indexes are not split-added (block lists): addPreassigned fails as FaissError instead of ending the process', async () => {
  const d = 16;
  const x = Float32Array.from({ length: 2000 * d }, (_, i) => Math.sin(i * 0.37));
  const index = FaissIndex.fromFactory(d, 'IVF8,PQ8x4fs', 'l2');
  await index.train(x);
  assert.equal(index.isIvf, false, 'the shard adds it with add()');
  const assign = await index.assign(x);
  await assert.rejects(index.addPreassigned(x, assign), /fast scan/);
  await index.add(x);
  assert.equal(index.ntotal, 2000);
});
