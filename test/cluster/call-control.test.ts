// Client API conventions (issue 18, item 5, in part): per-call { timeoutMs, signal } on search
// and addIndexData (an aborted add frees its slot and leaves nothing behind), and
// serverDown / serverUp events when a server goes away and comes back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ValidationError } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster } from '../helpers/cluster.js';

const dim = 8;
const data = new SyntheticDataset({ dim, seed: 18 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('per-call signal and timeoutMs: an aborted search or add rejects at once; an add waiting for a slot leaves the queue', { timeout: 60_000 }, async () => {
  const cluster = await startCluster(2);
  const client = await IndexClient.connect(cluster.discovery, { maxAddsInFlight: 1 });
  try {
    await client.createIndex('cc', { indexBuilderType: 'flat', dim, metric: 'l2' });
    await client.addIndexData('cc', data.base(100));
    const aborted = AbortSignal.abort(new Error('caller gave up'));
    await assert.rejects(client.search('cc', data.base(1), 3, { signal: aborted }), /caller gave up/);
    await assert.rejects(client.addIndexData('cc', data.base(10), undefined, { signal: aborted }), /caller gave up/);
    await assert.rejects(client.search('cc', data.base(1), 3, { timeoutMs: -1 }), (e: unknown) => e instanceof ValidationError && e.field === 'timeoutMs');
    // One slot: a big add holds it; a second add waits for it and is aborted while waiting.
    const big = client.addIndexData('cc', data.base(200_000, 1000));
    const ac = new AbortController();
    const waiting = client.addIndexData('cc', data.base(10, 500), undefined, { signal: ac.signal });
    ac.abort(new Error('not needed any more'));
    await assert.rejects(waiting, /not needed any more/);
    await big;
    // The slot is free again (the aborted add never took it), and nothing of it was stored.
    await client.addIndexData('cc', data.base(10, 600));
    for (let i = 0; (await client.getState('cc')) !== IndexState.TRAINED; i++) {
      assert.ok(i < 500);
      await sleep(20);
    }
    assert.equal(await client.getNtotal('cc'), 100 + 200_000 + 10);
    const ok = await client.search('cc', data.base(1), 3, { timeoutMs: 5000 });
    assert.equal(ok.scores[0]!.length, 3);
  } finally {
    await client.close();
    await cluster.stop();
  }
});

test('serverDown and serverUp: a killed server is reported once, and again when it is back', { timeout: 60_000 }, async () => {
  const cluster = await startCluster(2);
  const client = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 50 });
  const events: string[] = [];
  client.on('serverDown', ({ server }) => events.push(`down ${server}`));
  client.on('serverUp', ({ server }) => events.push(`up ${server}`));
  try {
    await client.createIndex('ev', { indexBuilderType: 'flat', dim, metric: 'l2' });
    const port = cluster.servers[1]!.port;
    const name = `127.0.0.1:${port}`;
    await cluster.kill(1);
    for (let i = 0; !events.includes(`down ${name}`); i++) {
      assert.ok(i < 100, `serverDown for ${name} (${events})`);
      await client.status().catch(() => {});
      await sleep(60);
    }
    await cluster.start(1, ['--port', String(port), '--load-index']);
    for (let i = 0; !events.includes(`up ${name}`); i++) {
      assert.ok(i < 100, `serverUp for ${name} (${events})`);
      await client.status().catch(() => {});
      await sleep(60);
    }
    assert.equal(events.filter((e) => e === `down ${name}`).length, 1, `one down event (${events})`);
  } finally {
    await client.close();
    await cluster.stop();
  }
});
