// Dead and slow servers: deadlines, partial results, reconnects, and adds that survive a
// server dying under them without loss or duplicates (idempotency keys).
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
    const client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 5000, reconnectIntervalMs: 100, addRetryWindowMs: 20_000 });
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
    const ids = [...(await client.getIds('churn'))].map(Number).sort((a, b) => a - b);
    assert.deepEqual(ids, Array.from({ length: sent }, (_, b) => b), 'every batch is there');
    assert.equal(await client.getNtotal('churn'), sent * ROWS, 'and none twice');
    await client.close();
  } finally {
    await cluster.stop();
  }
});

test('a client cannot reach any server: ServerUnavailableError names them', async () => {
  const cluster = await startCluster(1);
  const client = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 100 });
  await cluster.stop();
  await assert.rejects(client.search('x', [[1, 2, 3, 4, 5, 6, 7, 8]], 1, { allowPartial: true }).catch((e) => {
    throw e;
  }), (e: unknown) => e instanceof ConnectionError);
  await assert.rejects(client.createIndex('x', { dim }), (e: unknown) => e instanceof ServerUnavailableError || e instanceof ConnectionError);
  await client.close();
});
