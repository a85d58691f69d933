// Client API conventions (issue 18, item 5): per-call { timeoutMs, signal } on every call (an
// aborted add frees its slot and leaves nothing behind; calls to a stalled server stop waiting), and
// serverDown / serverUp events when a server goes away and comes back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, TimeoutError, ValidationError } from '../../src/index.js';
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

test('every call takes { timeoutMs, signal }: calls to a stalled server stop waiting at their deadline or abort, and the client works once it resumes', { timeout: 60_000 }, async () => {
  const cluster = await startCluster(2);
  const client = await IndexClient.connect(cluster.discovery);
  const flat = { indexBuilderType: 'flat' as const, dim, metric: 'l2' as const };
  const pid = cluster.servers[1]!.proc.pid!;
  try {
    await client.createIndex('ctl', flat);
    await client.addIndexData('ctl', data.base(100));
    await client.createIndex('rec', flat);
    await client.addIndexData('rec', data.base(4), undefined, { ids: [1, 2, 3, 4] });
    process.kill(pid, 'SIGSTOP'); // the socket stays open; nothing answers
    const within = async (what: string, p: Promise<unknown>, check: (e: unknown) => boolean): Promise<void> => {
      const t0 = performance.now();
      await assert.rejects(p, check, what);
      assert.ok(performance.now() - t0 < 5000, `${what} stopped waiting in ${performance.now() - t0} ms`);
    };
    const timedOut = (e: unknown) => e instanceof TimeoutError;
    await within('getNtotal', client.getNtotal('ctl', { timeoutMs: 300 }), timedOut);
    await within('createIndex', client.createIndex('other', flat, { timeoutMs: 300 }), timedOut);
    await within('get', client.get('rec', [1, 2], { timeoutMs: 300 }), timedOut);
    await within('setOmpNumThreads', client.setOmpNumThreads(1, { timeoutMs: 300 }), timedOut);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('caller gave up')), 200);
    await within('status', client.status({ signal: ac.signal }), (e) => e instanceof Error && e.message === 'caller gave up');
    const gone = AbortSignal.abort(new Error('aborted before'));
    await within('dropIndex', client.dropIndex('ctl', { signal: gone }), (e) => e instanceof Error && e.message === 'aborted before');
    await within('iterate', (async () => {
      for await (const page of client.iterate('rec', { timeoutMs: 300 })) void page;
    })(), timedOut);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  try {
    // Nothing was left behind: the index is still there and every call works again.
    assert.equal(await client.getNtotal('ctl', { timeoutMs: 10_000 }), 100);
    assert.deepEqual((await client.get('rec', [1, 2, 3, 4])).unknown, []);
  } finally {
    await client.close();
    await cluster.stop();
  }
});
