// Dead and slow servers: deadlines, partial results, reconnects, and adds that survive a
// server dying under them without loss or duplicates (moved to another server; the failed
// server revokes its copy, by idempotency key, once it is back).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionError, IndexClient, IndexState, ServerUnavailableError } from '../../src/index.js';
import { SyntheticDataset, prng } from '../../src/datasets/synthetic.js';
import { startCluster } from '../helpers/cluster.js';

const dim = 8;
const ROWS = 100;
const data = new SyntheticDataset({ dim, seed: 41 });

test('a dead server: calls fail fast naming it, allowPartial merges the live shards, the client reconnects when it is back', async () => {
  const cluster = await startCluster(3);
  try {
    const client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 3000, reconnectIntervalMs: 200 });
    await client.createIndex('dead', { indexBuilderType: 'flat', dim, metric: 'l2' });
    for (let b = 0; b < 6; b++) await client.addIndexData('dead', data.base(ROWS, b * ROWS), Array.from({ length: ROWS }, (_, i) => b * ROWS + i));
    await client.syncTrain('dead');
    const full = await client.search('dead', data.queries(3), 5);
    const port = cluster.servers[1]!.port;
    await cluster.kill(1, 'SIGKILL');

    const t0 = Date.now();
    await assert.rejects(client.search('dead', data.queries(3), 5), (e: unknown) => e instanceof ConnectionError && e.message.includes(`127.0.0.1:${port}`));
    assert.ok(Date.now() - t0 < 3000, 'failed within the deadline');
    await assert.rejects(client.getNtotal('dead'), ConnectionError);

    const partial = await client.search('dead', data.queries(3), 5, { allowPartial: true });
    assert.equal(partial.missing!.length, 1);
    assert.equal(partial.missing![0]!.server, `127.0.0.1:${port}`);
    assert.equal(partial.scores.length, 3);
    for (const row of partial.metadata) assert.equal(row.length, 5);

    // Back on the same port with its data: the client reconnects by itself.
    await cluster.start(1, ['--port', String(port), '--load-index']);
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(await client.search('dead', data.queries(3), 5), full);
    assert.equal(await client.getNtotal('dead'), 6 * ROWS);
    await client.close();
  } finally {
    await cluster.stop();
  }
});

test('adds keep working while a server dies and comes back: every batch stored exactly once', { timeout: 120_000 }, async () => {
  const cluster = await startCluster(2);
  const rand = prng(5);
  try {
    const client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 5000, reconnectIntervalMs: 100 });
    await client.createIndex('churn', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    let stop = false;
    let sent = 0;
    const errors: unknown[] = [];
    const writers = [0, 1, 2].map(async () => {
      while (!stop) {
        const b = sent++;
        try {
          await client.addIndexData('churn', data.base(ROWS, b * ROWS), Array.from({ length: ROWS }, (_, i) => [b, i]));
        } catch (err) {
          errors.push(err);
        }
      }
    });
    const port = cluster.servers[0]!.port;
    for (let cycle = 0; cycle < 4; cycle++) {
      await new Promise((r) => setTimeout(r, 100 + rand() * 200));
      await cluster.kill(0, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 100 + rand() * 200));
      await cluster.start(0, ['--port', String(port), '--load-index']);
    }
    await new Promise((r) => setTimeout(r, 200));
    stop = true;
    await Promise.all(writers);
    assert.deepEqual(errors, [], 'every addIndexData call succeeded');
    for (let i = 0; ; i++) {
      if ((await client.getState('churn')) === IndexState.TRAINED) break;
      assert.ok(i < 500, 'shards settle');
      await new Promise((r) => setTimeout(r, 20));
    }
    // getIds/getNtotal deliver pending revocations to the restarted server first.
    const ids = [...(await client.getIds('churn'))].map(Number).sort((a, b) => a - b);
    assert.deepEqual(ids, Array.from({ length: sent }, (_, b) => b), 'every batch is there');
    assert.equal(await client.getNtotal('churn'), sent * ROWS, 'and none twice');
    await client.close();
  } finally {
    await cluster.stop();
  }
});

test('a server that stored a batch but died before replying: the add moves to another server, the stored copy is revoked when it is back', { timeout: 120_000 }, async () => {
  const cluster = await startCluster(2);
  const BATCHES = 6;
  try {
    const client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 5000, reconnectIntervalMs: 100 });
    await client.createIndex('moved', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    const port0 = cluster.servers[0]!.port;
    // Server 0 again, now with the test hook: SIGKILL right after its next add is durable
    // in the log, before the reply (the real "stored, but the client never heard" case).
    await cluster.kill(0, 'SIGKILL');
    await cluster.start(0, ['--port', String(port0), '--load-index'], { DFAISS_TEST_DIE_AFTER_WAL: '1' });
    // Round-robin over 2 servers: one of the first two batches goes to server 0.
    for (let b = 0; b < BATCHES; b++) await client.addIndexData('moved', data.base(ROWS, b * ROWS), Array.from({ length: ROWS }, (_, i) => [b, i]));
    assert.equal(cluster.servers[0]!.proc.signalCode, 'SIGKILL', 'server 0 died in the hook while holding a batch');
    assert.deepEqual(client.pendingRevocations.map((r) => [r.server, r.indexId]), [[`127.0.0.1:${port0}`, 'moved']]);

    // Until server 0 confirms the revocation, reads that include it refuse to count its shard.
    await assert.rejects(client.getNtotal('moved'), (e: unknown) => e instanceof ServerUnavailableError && e.message.includes(`127.0.0.1:${port0}`));
    const partial = await client.search('moved', data.base(1, 0), 1, { allowPartial: true });
    assert.equal(partial.missing!.length, 1);

    // Back with its log, which holds the batch: the client revokes it there by itself.
    await cluster.start(0, ['--port', String(port0), '--load-index']);
    for (let i = 0; client.pendingRevocations.length > 0; i++) {
      assert.ok(i < 200, 'the revocation is delivered once the server is back');
      await new Promise((r) => setTimeout(r, 50));
    }
    for (let i = 0; (await client.getState('moved')) !== IndexState.TRAINED; i++) {
      assert.ok(i < 500, 'shards settle');
      await new Promise((r) => setTimeout(r, 20));
    }
    const status = await client.status();
    const first = status.find((s) => s.address.port === port0)!.indexes as Record<string, { tombstoned: number }>;
    assert.equal(first.moved!.tombstoned, ROWS, 'server 0 had stored the batch (now tombstoned)');
    assert.equal(await client.getNtotal('moved'), BATCHES * ROWS, 'every vector counted once');
    // Exact (flat) search for every vector: it finds itself first, and its second hit is
    // another vector (a stored duplicate would come second at distance 0 with the same metadata).
    const all = data.base(BATCHES * ROWS, 0);
    const r = await client.search('moved', all, 2);
    for (let q = 0; q < BATCHES * ROWS; q++) {
      const want = [Math.floor(q / ROWS), q % ROWS];
      assert.deepEqual(r.metadata[q]![0], want, `vector ${q} is stored`);
      assert.notDeepEqual(r.metadata[q]![1], want, `vector ${q} is stored twice`);
    }
    await client.close();
  } finally {
    await cluster.stop();
  }
});

test('a client cannot reach any server: ServerUnavailableError names them', async () => {
  const cluster = await startCluster(1);
  const client = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 100 });
  await client.createIndex('x', { indexBuilderType: 'flat', dim });
  const name = `127.0.0.1:${cluster.servers[0]!.port}`;
  await cluster.stop();
  await new Promise((r) => setTimeout(r, 200)); // let the client see its connections close
  // An add fails at once, naming the servers, instead of waiting for one to come back.
  const t0 = Date.now();
  await assert.rejects(client.addIndexData('x', data.base(2, 0)), (e: unknown) => e instanceof ServerUnavailableError && e.message.includes(name));
  assert.ok(Date.now() - t0 < 5000, 'the add failed promptly');
  assert.deepEqual(client.pendingRevocations, [], 'nothing was sent, so nothing to revoke');
  await assert.rejects(client.search('x', [[1, 2, 3, 4, 5, 6, 7, 8]], 1, { allowPartial: true }).catch((e) => {
    throw e;
  }), (e: unknown) => e instanceof ConnectionError);
  await assert.rejects(client.createIndex('x', { dim }), (e: unknown) => e instanceof ServerUnavailableError || e instanceof ConnectionError);
  await client.close();
});
