// Revocations do not live only in the client (issue 12, defect 2): a client moves a batch
// away from a server that died holding it and is SIGKILLed before that server is back. The
// server that received the moved batch holds the revocation durably (even across its own
// kill -9), and a different client delivers it before it reads from the failed server, so
// the batch is counted and returned once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { RpcClient } from '../../src/protocol/index.js';
import { encodeMetadata, offsetsBytes } from '../../src/protocol/metadata.js';
import { startCluster } from '../helpers/cluster.js';
import { runMovingClient } from '../helpers/mover.js';

const dim = 8;
const ROWS = 10;
const data = new SyntheticDataset({ dim, seed: 33 });

test('a moved batch whose client was SIGKILLed before revoking it is still counted once', { timeout: 120_000 }, async () => {
  const cluster = await startCluster(2);
  try {
    const setup = await IndexClient.connect(cluster.discovery);
    await setup.createIndex('mv', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    await setup.close();
    const port0 = cluster.servers[0]!.port;
    const port1 = cluster.servers[1]!.port;
    // Server 0 dies right after its first add is in its log, before replying.
    await cluster.kill(0);
    await cluster.start(0, ['--port', String(port0), '--load-index'], { DFAISS_TEST_DIE_AFTER_WAL: '1' });
    const batches = await runMovingClient(cluster.discovery, ROWS);
    assert.equal(cluster.servers[0]!.proc.signalCode, 'SIGKILL', 'server 0 died holding a batch');

    // The server that took the moved batch is killed -9 too: what it holds comes back from its log.
    await cluster.kill(1);
    await cluster.start(1, ['--port', String(port1), '--load-index']);
    await cluster.start(0, ['--port', String(port0), '--load-index']);

    // Before any client touches the index, server 1 holds the revocation it logged with the batch.
    const raw = await RpcClient.connect('127.0.0.1', port1);
    const held = (await raw.call<{ heldRevocations?: number }>('getInfo', { indexId: 'mv' })).result.heldRevocations;
    await raw.close();
    const client = await IndexClient.connect(cluster.discovery);
    try {
      for (let i = 0; (await client.getState('mv')) !== IndexState.TRAINED; i++) {
        assert.ok(i < 500, 'shards settle');
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(await client.getNtotal('mv'), batches * ROWS, 'every vector counted once');
      const all = data.base(batches * ROWS, 0);
      const r = await client.search('mv', all, 2);
      for (let q = 0; q < batches * ROWS; q++) {
        const want = [Math.floor(q / ROWS), q % ROWS];
        assert.deepEqual(r.metadata[q]![0], want, `vector ${q} is stored`);
        assert.notDeepEqual(r.metadata[q]![1], want, `vector ${q} is stored twice`);
      }
      assert.equal(held, 1, 'the server that took the moved batch held its revocation across kill -9');
      const status = await client.status();
      const idx = (port: number) => (status.find((s) => s.address.port === port)!.indexes as Record<string, { tombstoned: number }>).mv!;
      assert.equal(idx(port0).tombstoned, ROWS, 'server 0 had stored the batch; it is tombstoned now');
      // Delivered and confirmed: the holder forgets it (durably), and nothing is pending.
      for (let i = 0; ; i++) {
        const held = (await client.status()).map((s) => (s.indexes as Record<string, { heldRevocations: number }>).mv!.heldRevocations);
        assert.equal(held.length, 2);
        if (held.every((h) => h === 0)) break;
        assert.ok(i < 100, 'the holder is told the revocation was delivered');
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(client.pendingRevocations, []);
    } finally {
      await client.close();
    }
  } finally {
    await cluster.stop();
  }
});

test('held revocations reach clients that were connected all along, and a delivered-but-unconfirmed one is confirmed by the next client', { timeout: 120_000 }, async () => {
  const cluster = await startCluster(2);
  const raws = await Promise.all(cluster.servers.map((s) => RpcClient.connect('127.0.0.1', s.port)));
  // A long-lived client, connected before anything happens (no reconnect will tell it).
  const watcher = await IndexClient.connect(cluster.discovery);
  try {
    await watcher.createIndex('h', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    const rankOf = (i: number) => raws[i]!.server.rank!;
    const rawAdd = (i: number, b: number, key: string, movedFrom?: Array<[number, string]>) => {
      const { blob, offsets } = encodeMetadata(Array.from({ length: ROWS }, (_, r) => [b, r]), ROWS);
      return raws[i]!.call('addIndexData', { indexId: 'h', n: ROWS, key, ...(movedFrom ? { movedFrom } : {}) }, [data.base(ROWS, b * ROWS), blob, offsetsBytes(offsets)]);
    };
    // What a dying client leaves: batch 0 stored on server 0 under k0 (its reply never
    // arrived), then moved to server 1 under k1 with movedFrom; no revocation was sent.
    await rawAdd(0, 0, 'k0');
    await rawAdd(1, 0, 'k1', [[rankOf(0), 'k0']]);
    await rawAdd(0, 1, 'k2');
    for (let i = 0; (await watcher.getState('h')) !== IndexState.TRAINED; i++) {
      assert.ok(i < 500);
      await new Promise((r) => setTimeout(r, 20));
    }
    // The watcher's search sees server 1 holding a revocation it does not know: it delivers
    // it to server 0 and searches again, so batch 0 comes back once.
    const r = await watcher.search('h', data.base(ROWS, 0), 2);
    for (let q = 0; q < ROWS; q++) assert.notDeepEqual(r.metadata[q]![1], [0, q], `vector ${q} of the moved batch counted twice`);
    assert.equal(await watcher.getNtotal('h'), 2 * ROWS);

    // Delivered but never confirmed (the client died in between): the next client confirms it.
    await rawAdd(1, 2, 'k3', [[rankOf(0), 'k4']]);
    await raws[0]!.call('revokeBatch', { indexId: 'h', key: 'k4' });
    const heldOn1 = async () => (await raws[1]!.call<{ heldRevocations: number }>('getInfo', { indexId: 'h' })).result.heldRevocations;
    assert.equal(await heldOn1(), 1);
    const next = await IndexClient.connect(cluster.discovery);
    try {
      assert.equal(await next.getNtotal('h'), 3 * ROWS);
      for (let i = 0; (await heldOn1()) !== 0; i++) {
        assert.ok(i < 100, 'the holder is told the revocation was delivered');
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await next.close();
    }
  } finally {
    await watcher.close();
    await Promise.all(raws.map((r) => r.close()));
    await cluster.stop();
  }
});
