/**
 * Every builder type and a set of factory strings, built through the real FAISS binding:
 * train, add, search with k=5, check shapes (and exact self-matches where the index is exact).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createFaissIndex, defaultIndexCfg, resolveIndexSpec, type IndexCfg } from '../../src/config/index.js';
import { GpuUnavailableError } from '../../src/errors.js';
import { gpuAvailable } from '../../src/native/index.js';
import { syntheticClusters } from '../helpers/data.js';

const DIM = 64;
const N = 3000;
const K = 5;
const NQ = 20;

// Unit length, so under 'dot' every point is its own best match, as under 'l2'.
const { data, assignments } = syntheticClusters({ n: N, dim: DIM, clusters: 24, seed: 7, normalize: true });
// The first NQ indexed points serve as queries.
const queries = data.slice(0, NQ * DIM);

interface Case {
  name: string;
  cfg: Partial<IndexCfg>;
  factory: string;
  /** Exact search: each query must find itself first. */
  exact?: boolean;
  nlist?: number;
}

const cases: Case[] = [
  { name: 'flat (dot)', cfg: { indexBuilderType: 'flat' }, factory: 'Flat', exact: true },
  { name: 'flat (l2)', cfg: { indexBuilderType: 'flat', metric: 'l2' }, factory: 'Flat', exact: true },
  // A query's own list is always its nearest centroid under l2, so nprobe=1 still finds it.
  { name: 'ivf_simple', cfg: { indexBuilderType: 'ivf_simple', centroids: 16, metric: 'l2' }, factory: 'IVF16,Flat', exact: true, nlist: 16 },
  // code_size 16, not the default 64: 64 sub-quantizers take ~3 s to train here.
  { name: 'knnlm', cfg: { indexBuilderType: 'knnlm', centroids: 16, extra: { codeSize: 16 } }, factory: 'IVF16,PQ16x8np', nlist: 16 },
  { name: 'hnswsq', cfg: { indexBuilderType: 'hnswsq', metric: 'l2', nprobe: 32, extra: { storeN: 16, efConstruction: 40 } }, factory: 'HNSW16,SQ8' },
  { name: 'hnswsq (defaults: HNSW128)', cfg: { indexBuilderType: 'hnswsq', nprobe: 16 }, factory: 'HNSW128,SQ8' },
  { name: 'ivfsq', cfg: { indexBuilderType: 'ivfsq', centroids: 16, nprobe: 4 }, factory: 'IVF16,SQfp16', nlist: 16 },
  { name: 'factory Flat', cfg: { faissFactory: 'Flat', metric: 'l2' }, factory: 'Flat', exact: true },
  // centroids 0: inferred as int(2*sqrt(3000)) = 109. (FAISS warns that k-means wants more points: expected, speed first.)
  { name: 'factory IVF{centroids},Flat', cfg: { faissFactory: 'IVF{centroids},Flat', metric: 'l2' }, factory: 'IVF109,Flat', exact: true, nlist: 109 },
  // "np": plain "PQ8" adds FAISS's polysemous training, ~20 s here for no test value.
  { name: 'factory IVF16,PQ8np', cfg: { faissFactory: 'IVF16,PQ8np' }, factory: 'IVF16,PQ8np', nlist: 16 },
  { name: 'factory HNSW32', cfg: { faissFactory: 'HNSW32', metric: 'l2' }, factory: 'HNSW32' },
  { name: 'factory IVF16,SQ8', cfg: { faissFactory: 'IVF16,SQ8', nprobe: 2 }, factory: 'IVF16,SQ8', nlist: 16 },
  { name: 'factory PCA32,IVF16,Flat', cfg: { faissFactory: 'PCA32,IVF16,Flat', metric: 'l2', nprobe: 16 }, factory: 'PCA32,IVF16,Flat', nlist: 16 },
];

describe('builders through FAISS', () => {
  for (const c of cases) {
    test(c.name, async () => {
      const cfg = defaultIndexCfg({ dim: DIM, ...c.cfg });
      const spec = resolveIndexSpec(cfg, N);
      assert.equal(spec.factory, c.factory);

      const index = await createFaissIndex(cfg, N);
      assert.equal(index.dim, DIM);
      assert.equal(index.metric, spec.metric);
      assert.equal(index.nlist, c.nlist ?? -1);
      // Every parameter the spec asks for was accepted by FAISS's ParameterSpace.
      assert.deepEqual([...index.parameters], spec.params);

      await index.train(data);
      assert.equal(index.isTrained, true);
      await index.add(data);
      assert.equal(index.ntotal, N);

      const res = await index.search(queries, K);
      assert.equal(res.distances.length, NQ * K);
      assert.equal(res.labels.length, NQ * K);
      assert.ok(res.labels instanceof BigInt64Array);
      for (const label of res.labels) assert.ok(label >= 0n && label < BigInt(N), `label ${label} out of range`);
      for (let q = 0; q < NQ; q++) {
        const row = Array.from(res.distances.subarray(q * K, (q + 1) * K));
        // Best first: descending scores for dot, ascending distances for l2.
        const sorted = [...row].sort((a, b) => (spec.metric === 'dot' ? b - a : a - b));
        assert.deepEqual(row, sorted, `query ${q} results are not ordered best first`);
        if (c.exact) assert.equal(res.labels[q * K], BigInt(q), `query ${q} should find itself first`);
      }
      if (!c.exact) {
        // Compressed codes blur neighbours within a cluster, but the best hit must still
        // come from the query's own cluster.
        let same = 0;
        for (let q = 0; q < NQ; q++) if (assignments[Number(res.labels[q * K])] === assignments[q]) same++;
        assert.ok(same >= 0.9 * NQ, `only ${same}/${NQ} queries got a first hit from their own cluster`);
      }
    });
  }

  test('ivf_gpu is refused on this FAISS build', { skip: gpuAvailable && 'this FAISS has GPU support' }, async () => {
    const cfg = defaultIndexCfg({ dim: DIM, indexBuilderType: 'ivf_gpu', faissFactory: 'IVF{centroids},Flat', centroids: 16 });
    await assert.rejects(createFaissIndex(cfg, N), GpuUnavailableError);
  });

  test('too few training vectors for the lists fails before FAISS', async () => {
    const cfg = defaultIndexCfg({ dim: DIM, indexBuilderType: 'ivf_simple', centroids: 64 });
    await assert.rejects(createFaissIndex(cfg, 63), /invalid centroids: .*raise train_num or lower centroids/);
  });
});
