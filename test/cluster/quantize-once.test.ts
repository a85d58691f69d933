// Quantize once for a fan-out search (issue 15, item 2): one server finds a batch's probe
// lists, every shard whose quantizer has the same fingerprint searches them. Real servers:
// the hits equal the normal path's (ids and distances) for IVF-Flat and IVF-PQ, with
// per-call nprobe and filters; a shard that trained on its own ignores the lists; bad lists
// are refused naming the field; allowPartial and a dead server still work.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ValidationError, type IndexCfg } from '../../src/index.js';
import { quantizeOncePays } from '../../src/client/quantize-once.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { RpcClient } from '../../src/protocol/index.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 32;
const N = 6000;
const data = new SyntheticDataset({ dim, seed: 21 });
const base = data.base(N);
const queries = data.queries(60);

let cluster: TestCluster;
let plain: IndexClient;
let quant: IndexClient;
before(async () => {
  // One FAISS thread: a server's own search then runs the quantizer over the whole batch, as quantize does.
  cluster = await startCluster(3, { threads: 1 });
  plain = await IndexClient.connect(cluster.discovery, { sharedQuantize: 'never' });
  quant = await IndexClient.connect(cluster.discovery, { sharedQuantize: 'always', reconnectIntervalMs: 100, callTimeoutMs: 5000 });
});
after(async () => {
  await quant.close();
  await plain.close();
  await cluster.stop();
});

async function load(id: string, cfg: Partial<IndexCfg>): Promise<void> {
  await plain.createIndex(id, { dim, metric: 'l2', centroids: 32, nprobe: 8, trainNum: N, ...cfg });
  for (let i = 0; i < N; i += 1000) await plain.addIndexData(id, base.subarray(i * dim, (i + 1000) * dim), Array.from({ length: 1000 }, (_, j) => i + j));
  await plain.trainingSettled(id);
  const end = Date.now() + 60_000;
  while ((await plain.getState(id)) !== IndexState.TRAINED || (await plain.getNtotal(id)) !== N) {
    assert.ok(Date.now() < end, `${id} trained`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** quantize and search on one server over a bare connection: what each shard was given and used. */
async function raw<T>(rank: number, fn: (c: RpcClient) => Promise<T>): Promise<T> {
  const c = await RpcClient.connect('127.0.0.1', cluster.servers[rank]!.port);
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

type QuantizeReply = { fingerprint: string | null; nprobe: number; reason?: string };

for (const [name, cfg] of [
  ['IVF-Flat', { indexBuilderType: 'ivf_simple' }],
  ['IVF-PQ (knnlm)', { indexBuilderType: 'knnlm', extra: { codeSize: 8, bitsPerVector: 6 } }],
] as const) {
  test(`${name}, shared training: every shard uses the shared probe lists and the hits equal the normal path's`, { timeout: 120_000 }, async () => {
    const id = name.replace(/[^a-z]/gi, '').toLowerCase();
    await load(id, cfg);
    const q = await Promise.all([0, 1, 2].map((r) => raw(r, (c) => c.call<QuantizeReply>('quantize', { indexId: id }, [queries]))));
    assert.ok(q[0]!.result.fingerprint, 'a shared IVF index can be quantized once');
    assert.ok(q.every((r) => r.result.fingerprint === q[0]!.result.fingerprint), 'one trained state, one fingerprint');
    assert.deepEqual(q[1]!.attachments, q[0]!.attachments, 'every shard would find the same lists');
    const [assign, coarse] = q[0]!.attachments;
    assert.equal((assign as BigInt64Array).length, 60 * 8);
    for (const rank of [0, 1, 2]) {
      const [a, b] = await raw(rank, async (c) => [
        await c.call<{ preassigned?: boolean }>('search', { indexId: id, k: 10 }, [queries]),
        await c.call<{ preassigned?: boolean }>('search', { indexId: id, k: 10, probes: { fingerprint: q[0]!.result.fingerprint, nprobe: 8 } }, [queries, assign!, coarse!]),
      ]);
      assert.equal(b.result.preassigned, true, `shard ${rank} used the lists`);
      assert.equal(a.result.preassigned, undefined);
      assert.deepEqual(b.attachments.slice(0, 4), a.attachments.slice(0, 4), `shard ${rank}: same ids, distances and metadata`);
    }
    // Through the client: the same results, also with a per-call nprobe and with a filter.
    assert.deepEqual(await quant.search(id, queries, 10), await plain.search(id, queries, 10));
    assert.deepEqual(await quant.search(id, queries, 10, { params: { nprobe: 3 } }), await plain.search(id, queries, 10, { params: { nprobe: 3 } }));
    const odd = { where: (m: unknown) => (m as number) % 2 === 1 };
    assert.deepEqual(await quant.searchWithFilter(id, queries, 10, odd), await plain.searchWithFilter(id, queries, 10, odd));
    await plain.dropIndex(id);
  });
}

test('per-shard training: each shard has its own fingerprint and ignores lists computed with another', { timeout: 120_000 }, async () => {
  await load('own', { indexBuilderType: 'ivf_simple', trainMode: 'per-shard', trainNum: N / 3 });
  const q0 = await raw(0, (c) => c.call<QuantizeReply>('quantize', { indexId: 'own' }, [queries]));
  const q1 = await raw(1, (c) => c.call<QuantizeReply>('quantize', { indexId: 'own' }, [queries]));
  assert.ok(q0.result.fingerprint && q1.result.fingerprint);
  assert.notEqual(q0.result.fingerprint, q1.result.fingerprint, 'two trainings, two sets of centroids');
  const [a, b] = await raw(1, async (c) => [
    await c.call<{ preassigned?: boolean }>('search', { indexId: 'own', k: 10 }, [queries]),
    await c.call<{ preassigned?: boolean }>('search', { indexId: 'own', k: 10, probes: { fingerprint: q0.result.fingerprint, nprobe: 8 } }, [queries, ...q0.attachments]),
  ]);
  assert.equal(b.result.preassigned, undefined, 'shard 1 quantized itself');
  assert.deepEqual(b.attachments.slice(0, 4), a.attachments.slice(0, 4));
  assert.deepEqual(await quant.search('own', queries, 10), await plain.search('own', queries, 10));
  await plain.dropIndex('own');
});

test('an index that cannot be quantized once (Flat, fast scan) says why, and the client searches as usual', { timeout: 120_000 }, async () => {
  await load('fs', { faissFactory: 'IVF{centroids},PQ16x4fs' });
  const r = await raw(0, (c) => c.call<QuantizeReply>('quantize', { indexId: 'fs' }, [queries]));
  assert.equal(r.result.fingerprint, null);
  assert.match(r.result.reason!, /fast-scan/);
  assert.equal(r.attachments.length, 0);
  assert.deepEqual(await quant.search('fs', queries, 10), await plain.search('fs', queries, 10));
  await plain.dropIndex('fs');
});

test('bad probe lists are refused naming the field, and the server keeps serving', { timeout: 120_000 }, async () => {
  await load('bad', { indexBuilderType: 'ivf_simple' });
  const q = queries.subarray(0, 4 * dim);
  await raw(0, async (c) => {
    const { result, attachments } = await c.call<QuantizeReply>('quantize', { indexId: 'bad' }, [q]);
    const [assign, coarse] = attachments as [BigInt64Array, Float32Array];
    const probes = { fingerprint: result.fingerprint, nprobe: 8 };
    const refused = (args: object, atts: unknown[], field: RegExp) =>
      assert.rejects(c.call('search', { indexId: 'bad', k: 5, ...args }, atts as Float32Array[]), (e: Error) => e instanceof ValidationError && field.test(e.message));
    await refused({ probes }, [q, assign.map((l, i) => (i === 3 ? 32n : l)), coarse], /assign\[3\]/);
    await refused({ probes }, [q, assign.subarray(8), coarse], /assign/);
    await refused({ probes }, [q, assign, coarse.subarray(1)], /coarse/);
    await refused({ probes }, [q, assign], /attachments/);
    await refused({ probes: { ...probes, nprobe: 33 } }, [q, assign, coarse], /nprobe/);
    await refused({ probes: { fingerprint: '' , nprobe: 8 } }, [q, assign, coarse], /fingerprint/);
    await refused({}, [q, assign, coarse], /attachments/);
    await refused({ probes, filter: { $id: { $exists: true } } }, [q, assign, coarse], /probes/);
    const ok = await c.call<{ preassigned?: boolean }>('search', { indexId: 'bad', k: 5, probes }, [q, assign, coarse]);
    assert.equal(ok.result.preassigned, true);
  });
  await plain.dropIndex('bad');
});

test('a dead server: allowPartial searches quantized once answer from the live shards, and the rest fails as without', { timeout: 120_000 }, async () => {
  await load('dead', { indexBuilderType: 'ivf_simple' });
  const full = await plain.search('dead', queries, 10);
  assert.deepEqual(await quant.search('dead', queries, 10), full);
  const port = cluster.servers[2]!.port;
  await cluster.kill(2);
  // Several searches: the quantizing server takes turns, so some turns fall on the dead one.
  for (let i = 0; i < 4; i++) {
    const partial = await quant.search('dead', queries, 10, { allowPartial: true });
    const want = await plain.search('dead', queries, 10, { allowPartial: true });
    assert.deepEqual([partial.scores, partial.metadata], [want.scores, want.metadata]);
    assert.deepEqual(partial.missing?.map((m) => m.server), [`127.0.0.1:${port}`]);
    await assert.rejects(quant.search('dead', queries, 10), /127\.0\.0\.1/);
  }
  await cluster.start(2, ['--port', String(port), '--load-index']);
  const end = Date.now() + 30_000;
  while ((await quant.search('dead', queries, 10).catch(() => null)) === null) {
    assert.ok(Date.now() < end, 'the server came back');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(await quant.search('dead', queries, 10), full);
});

test('the rule: batch-1 never quantizes once; large batches over many servers do', () => {
  assert.equal(quantizeOncePays(1, 64), false);
  assert.equal(quantizeOncePays(100, 1), false);
  assert.equal(quantizeOncePays(100, 4), false);
  assert.equal(quantizeOncePays(100, 16), true);
  assert.equal(quantizeOncePays(100, 64), true);
});
