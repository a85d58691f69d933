// The distributed system end to end: real server processes on loopback, real clients.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, IndexState, TimeoutError, UnknownIndexError, ValidationError } from '../../src/index.js';
import { SyntheticDataset, prng } from '../../src/datasets/synthetic.js';
import { CLI, startCluster, type TestCluster } from '../helpers/cluster.js';

let cluster: TestCluster;
before(async () => {
  cluster = await startCluster(4);
});
after(async () => {
  await cluster.stop();
});

async function waitFor(client: IndexClient, indexId: string, state: IndexState, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while ((await client.getState(indexId)) !== state) {
    if (Date.now() > end) throw new Error(`index ${indexId} not ${state} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('train_num is honoured: 9 vectors stay NOT_TRAINED, the 10th triggers training', async () => {
  const client = await IndexClient.connect(cluster.discovery);
  try {
    // One server's view: a single-server client over server 0.
    const one = await IndexClient.connectTo([{ host: '127.0.0.1', port: cluster.servers[0]!.port }]);
    await one.createIndex('trainnum', { indexBuilderType: 'flat', dim: 4, trainNum: 10, metric: 'l2' });
    const rows = Array.from({ length: 10 }, (_, i) => [i, i, i, i]);
    await one.addIndexData('trainnum', rows.slice(0, 9), rows.slice(0, 9).map((_, i) => [`doc${i}`]));
    assert.equal(await one.getState('trainnum'), IndexState.NOT_TRAINED);
    assert.equal(await one.getNtotal('trainnum'), 0);
    await one.addIndexData('trainnum', rows.slice(9), [['doc9']]);
    await waitFor(one, 'trainnum', IndexState.TRAINED);
    assert.equal(await one.getNtotal('trainnum'), 10);
    const r = await one.search('trainnum', [[9, 9, 9, 9.1]], 2);
    assert.deepEqual(r.metadata, [[['doc9'], ['doc8']]]);
    assert.ok(Math.abs(r.scores[0]![0]! - 0.01) < 1e-5);
    await one.dropIndex('trainnum');
    await one.close();
  } finally {
    await client.close();
  }
});

test('4 clients x 4 servers: even placement; distributed flat equals one flat index bit for bit', async () => {
  const dim = 32;
  const data = new SyntheticDataset({ dim, seed: 11 });
  const perClient = 8; // batches per client: a multiple of 4 servers
  const batch = 250;
  const clients = await Promise.all(Array.from({ length: 4 }, () => IndexClient.connect(cluster.discovery)));
  const single = await IndexClient.connectTo([{ host: '127.0.0.1', port: cluster.servers[0]!.port }]);
  try {
    const cfg = { indexBuilderType: 'flat' as const, dim, metric: 'l2' as const };
    await clients[0]!.createIndex('dist', cfg);
    await single.createIndex('single', cfg);
    await Promise.all(
      clients.map(async (c, ci) => {
        for (let b = 0; b < perClient; b++) {
          const offset = (ci * perClient + b) * batch;
          const vectors = data.base(batch, offset);
          const meta = Array.from({ length: batch }, (_, i) => ({ id: offset + i, client: ci }));
          await c.addIndexData('dist', vectors, meta);
          await single.addIndexData('single', vectors, meta);
        }
      }),
    );
    const total = 4 * perClient * batch;
    await clients[0]!.syncTrain('dist');
    await single.syncTrain('single');
    await waitFor(clients[1]!, 'dist', IndexState.TRAINED);
    await waitFor(single, 'single', IndexState.TRAINED);
    assert.equal(await clients[2]!.getNtotal('dist'), total);
    assert.equal(await clients[2]!.getNtotal('unknown-index'), 0);
    const status = await clients[3]!.status();
    for (const s of status) {
      assert.equal((s.indexes as Record<string, { ntotal: number }>).dist!.ntotal, total / 4, `server ${String(s.rank)} holds a quarter`);
    }

    const queries = data.queries(10); // < 20 queries: FAISS's exact per-vector path on both sides
    const a = await clients[1]!.search('dist', queries, 10);
    const b = await single.search('single', queries, 10);
    assert.deepEqual(a.metadata, b.metadata);
    assert.deepEqual(a.scores, b.scores);
    assert.equal(a.metadata[0]!.length, 10);

    const ids = await clients[0]!.getIds('dist');
    assert.equal(ids.size, total, 'getIds: one distinct metadata value per vector');
    await clients[0]!.saveIndex('dist');
    await clients[0]!.dropIndex('dist');
    assert.equal(await clients[0]!.getNtotal('dist'), 0);
    await assert.rejects(clients[0]!.getState('dist'), UnknownIndexError);
    await single.dropIndex('single');
  } finally {
    await Promise.all([...clients, single].map((c) => c.close()));
  }
});

test('searches keep answering while another client ingests, and see a growing ntotal', async () => {
  const dim = 16;
  const data = new SyntheticDataset({ dim, seed: 12 });
  const writer = await IndexClient.connect(cluster.discovery);
  const reader = await IndexClient.connect(cluster.discovery);
  try {
    await writer.createIndex('live', { indexBuilderType: 'ivf_simple', dim, centroids: 16, trainNum: 1000, metric: 'l2', nprobe: 4 });
    await Promise.all(Array.from({ length: 4 }, (_, i) => writer.addIndexData('live', data.base(1000, i * 1000))));
    await waitFor(reader, 'live', IndexState.TRAINED);
    let ingesting = true;
    const seen: number[] = [];
    let searches = 0;
    const searcher = (async () => {
      while (ingesting) {
        const r = await reader.search('live', data.queries(5), 5);
        assert.equal(r.scores.length, 5);
        seen.push(await reader.getNtotal('live'));
        searches++;
      }
    })();
    for (let b = 4; b < 44; b++) await writer.addIndexData('live', data.base(1000, b * 1000), Array.from({ length: 1000 }, (_, i) => b * 1000 + i));
    await waitFor(reader, 'live', IndexState.TRAINED);
    ingesting = false;
    await searcher;
    assert.ok(searches >= 5, `only ${searches} searches ran during ingest`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! >= seen[i - 1]!, 'ntotal never goes back');
    assert.ok(seen[seen.length - 1]! > seen[0]!, `ntotal grew (${seen[0]} -> ${seen[seen.length - 1]})`);
    assert.equal(await reader.getNtotal('live'), 44000);
    const c = await reader.getCentroids('live');
    assert.equal(c.length, 4);
    for (const x of c) assert.deepEqual([x.nlist, x.dim, x.data.length], [16, dim, 16 * dim]);
    await writer.dropIndex('live');
  } finally {
    await Promise.all([writer.close(), reader.close()]);
  }
});

test('two indexes with different metrics on the same servers each merge with their own metric', async () => {
  const dim = 8;
  const client = await IndexClient.connect(cluster.discovery);
  try {
    await client.createIndex('m-l2', { indexBuilderType: 'flat', dim, metric: 'l2' });
    await client.createIndex('m-dot', { indexBuilderType: 'flat', dim, metric: 'dot' });
    const rand = prng(3);
    const vecs = Float32Array.from({ length: 400 * dim }, () => rand() * 2 - 1);
    const meta = Array.from({ length: 400 }, (_, i) => i);
    for (let b = 0; b < 4; b++) {
      await client.addIndexData('m-l2', vecs.subarray(b * 100 * dim, (b + 1) * 100 * dim), meta.slice(b * 100, (b + 1) * 100));
      await client.addIndexData('m-dot', vecs.subarray(b * 100 * dim, (b + 1) * 100 * dim), meta.slice(b * 100, (b + 1) * 100));
    }
    await client.syncTrain('m-l2');
    await client.syncTrain('m-dot');
    await waitFor(client, 'm-l2', IndexState.TRAINED);
    await waitFor(client, 'm-dot', IndexState.TRAINED);
    const q = vecs.subarray(0, dim);
    const l2 = await client.search('m-l2', q, 5);
    const dot = await client.search('m-dot', q, 5);
    // brute force
    const score = (i: number, m: 'l2' | 'dot') => {
      let s = 0;
      for (let j = 0; j < dim; j++) s += m === 'l2' ? (q[j]! - vecs[i * dim + j]!) ** 2 : q[j]! * vecs[i * dim + j]!;
      return s;
    };
    const order = (m: 'l2' | 'dot') => meta.slice().sort((a, b) => (m === 'l2' ? score(a, m) - score(b, m) : score(b, m) - score(a, m))).slice(0, 5);
    assert.deepEqual(l2.metadata[0], order('l2'));
    assert.deepEqual(dot.metadata[0], order('dot'));
    assert.equal(l2.metadata[0]![0], 0);
    for (let i = 1; i < 5; i++) {
      assert.ok(l2.scores[0]![i]! >= l2.scores[0]![i - 1]!);
      assert.ok(dot.scores[0]![i]! <= dot.scores[0]![i - 1]!);
    }
    await client.dropIndex('m-l2');
    await client.dropIndex('m-dot');
  } finally {
    await client.close();
  }
});

test('searchWithFilter returns k hits whenever k matching hits exist; embeddings come back', async () => {
  const dim = 8;
  const client = await IndexClient.connect(cluster.discovery);
  try {
    await client.createIndex('filt', { indexBuilderType: 'flat', dim, metric: 'l2' });
    const rand = prng(4);
    const n = 800;
    const vecs = Float32Array.from({ length: n * dim }, () => rand());
    // 95% of the vectors carry the excluded language: a 3x over-fetch is not enough.
    const meta = Array.from({ length: n }, (_, i) => [i, i % 20 === 0 ? 'en' : 'fr']);
    for (let b = 0; b < 4; b++) await client.addIndexData('filt', vecs.subarray(b * 200 * dim, (b + 1) * 200 * dim), meta.slice(b * 200, (b + 1) * 200));
    await client.syncTrain('filt');
    await waitFor(client, 'filt', IndexState.TRAINED);
    const r = await client.searchWithFilter('filt', vecs.subarray(0, 2 * dim), 10, { filterPos: 1, filterValue: 'fr' }, { returnEmbeddings: true });
    for (let q = 0; q < 2; q++) {
      assert.equal(r.metadata[q]!.length, 10);
      for (const m of r.metadata[q]!) assert.equal((m as unknown[])[1], 'en');
      const id = (r.metadata[q]![0] as number[])[0]!;
      assert.deepEqual(r.embeddings![q]![0], vecs.subarray(id * dim, (id + 1) * dim));
    }
    const all = await client.searchWithFilter('filt', vecs.subarray(0, dim), 100, { where: (m) => (m as unknown[])[1] === 'en' });
    assert.equal(all.metadata[0]!.length, 40, 'every one of the 40 matching vectors, and no more');
    await client.dropIndex('filt');
  } finally {
    await client.close();
  }
});

test('save, restart every server with --load-index, identical results', async () => {
  const dim = 16;
  const data = new SyntheticDataset({ dim, seed: 13 });
  const local = await startCluster(2);
  try {
    let client = await IndexClient.connect(local.discovery);
    await client.createIndex('persist', { indexBuilderType: 'ivf_simple', dim, centroids: 8, trainNum: 1000, metric: 'dot', nprobe: 8 });
    for (let b = 0; b < 6; b++) await client.addIndexData('persist', data.base(500, b * 500), Array.from({ length: 500 }, (_, i) => ({ row: b * 500 + i })));
    await waitFor(client, 'persist', IndexState.TRAINED);
    const before = await client.search('persist', data.queries(5), 5);
    await client.saveIndex('persist');
    await client.close();
    await local.kill(0, 'SIGTERM');
    await local.kill(1, 'SIGTERM');
    await local.start(0, ['--load-index']);
    await local.start(1, ['--load-index']);
    client = await IndexClient.connect(local.discovery);
    assert.equal(await client.getState('persist'), IndexState.TRAINED);
    assert.equal(await client.getNtotal('persist'), 3000);
    const after = await client.search('persist', data.queries(5), 5);
    assert.deepEqual(after, before);
    await client.close();
  } finally {
    await local.stop();
  }
});

test('connect() waits for servers that register themselves, and times out in the original words', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-disc-'));
  const discovery = join(dir, 'servers.txt');
  writeFileSync(discovery, '2\n');
  await assert.rejects(IndexClient.connect(discovery, { discoveryTimeoutMs: 300 }), (e: unknown) => e instanceof TimeoutError && /^2 != 0 in server list .*servers\.txt\. Timed out after waiting 0\.\d seconds: it lists 0 of 2 servers/.test(e.message));
  const procs = [0, 1].map((rank) =>
    spawn(process.execPath, [CLI, 'server', '--rank', String(rank), '--port', '0', '--save-dir', join(dir, 'data'), '--discovery-config', discovery], { stdio: 'ignore' }),
  );
  try {
    const client = await IndexClient.connect(discovery, { discoveryTimeoutMs: 20_000 });
    assert.equal(client.numServers, 2);
    await assert.rejects(client.createIndex('bad', { dim: -1 } as never), ValidationError);
    await client.close();
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
