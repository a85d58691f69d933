// Batch revocation (revokeBatch) against a real server: a revoked batch that was stored is
// tombstoned and never returned or counted; a key revoked before its batch arrives makes
// that batch be refused; both survive a SIGKILL restart (WAL replay) and a snapshot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { IndexClient, IndexState } from '../../src/index.js';
import { defaultIndexCfg } from '../../src/config/index.js';
import { encodeMetadata, offsetsBytes } from '../../src/protocol/metadata.js';
import { RpcClient } from '../../src/protocol/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster } from '../helpers/cluster.js';

const dim = 8;
const ROWS = 20;
const ID = 'rv';
const data = new SyntheticDataset({ dim, seed: 91 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rawAdd(raw: RpcClient, b: number, key: string) {
  const { blob, offsets } = encodeMetadata(Array.from({ length: ROWS }, (_, i) => [b, i]), ROWS);
  return raw.call<{ firstId: number; revoked?: boolean }>('addIndexData', { indexId: ID, n: ROWS, key, trainAsync: false }, [data.base(ROWS, b * ROWS), blob, offsetsBytes(offsets)]);
}

/** Batches 0 and 2 are there exactly once; revoked batch 1 and refused batch 3 are not. */
async function checkVisible(client: IndexClient): Promise<void> {
  for (let i = 0; (await client.getState(ID)) !== IndexState.TRAINED; i++) {
    assert.ok(i < 500, 'shard settles');
    await sleep(20);
  }
  assert.equal(await client.getNtotal(ID), 2 * ROWS, 'ntotal excludes the tombstoned batch');
  assert.deepEqual([...(await client.getIds(ID))].sort(), [0, 2], 'getIds skips tombstoned ids');
  const info = ((await client.status())[0]!.indexes as Record<string, { tombstoned: number; total: number }>)[ID]!;
  assert.equal(info.tombstoned, ROWS);
  assert.equal(info.total, 2 * ROWS);
  // Each vector of the revoked batch is stored but must not come back; the over-fetch
  // still yields k live hits.
  const gone = await client.search(ID, data.base(ROWS, 1 * ROWS), 3);
  for (const row of gone.metadata) {
    assert.equal(row.length, 3, 'k live hits despite the tombstones');
    for (const m of row) assert.notEqual((m as number[])[0], 1, 'a tombstoned vector was returned');
  }
  // Live vectors find themselves, with their own vector (the compaction keeps rows aligned).
  const own = data.base(ROWS, 2 * ROWS);
  const found = await client.search(ID, own, 2, { returnEmbeddings: true });
  for (let i = 0; i < ROWS; i++) {
    assert.deepEqual(found.metadata[i]![0], [2, i]);
    assert.deepEqual([...found.embeddings![i]![0]!], [...own.subarray(i * dim, (i + 1) * dim)]);
  }
}

test('revokeBatch tombstones a stored batch, blocks an unseen key, and both survive restarts', { timeout: 120_000 }, async () => {
  const cluster = await startCluster(1);
  const port = cluster.servers[0]!.port;
  let raw: RpcClient | undefined;
  let client: IndexClient | undefined;
  const reconnectRaw = async () => {
    await raw?.close();
    raw = await RpcClient.connect('127.0.0.1', port);
    return raw;
  };
  try {
    let r = await reconnectRaw();
    await r.call('createIndex', { indexId: ID, cfg: defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 }) });
    for (const b of [0, 1, 2]) assert.equal((await rawAdd(r, b, `key-${b}`)).result.firstId, b * ROWS);

    assert.deepEqual((await r.call('revokeBatch', { indexId: ID, key: 'key-1' })).result, { outcome: 'tombstoned', count: ROWS });
    assert.deepEqual((await r.call('revokeBatch', { indexId: ID, key: 'key-1' })).result, { outcome: 'already', count: 0 }, 'idempotent');
    // Revoked before it arrives (the client gave up on a request still on its way): refused.
    assert.deepEqual((await r.call('revokeBatch', { indexId: ID, key: 'late' })).result, { outcome: 'blocked', count: 0 });
    assert.deepEqual((await rawAdd(r, 3, 'late')).result, { firstId: -1, revoked: true, state: IndexState.TRAINED });
    // A retry of a stored-then-revoked key is refused too.
    assert.equal((await rawAdd(r, 1, 'key-1')).result.firstId, -1);

    client = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 50, callTimeoutMs: 10_000 });
    await checkVisible(client);

    // Crash: the revocations come back from the write-ahead log.
    await cluster.kill(0, 'SIGKILL');
    await cluster.start(0, ['--port', String(port), '--load-index']);
    r = await reconnectRaw();
    await checkVisible(client);
    assert.equal((await rawAdd(r, 3, 'late')).result.firstId, -1, 'the blocked key is still refused after WAL replay');

    // Snapshot, then crash: now they come from the snapshot manifest (the log before it is not replayed).
    await client.saveIndex(ID);
    const shardDir = join(cluster.saveDir, ID, '0');
    const newest = readdirSync(shardDir).filter((n) => /^snapshot-\d{10}$/.test(n)).sort().pop()!;
    const manifest = JSON.parse(readFileSync(join(shardDir, newest, 'manifest.json'), 'utf8')) as { tombstones: unknown; revokedKeys: string[] };
    assert.deepEqual(manifest.tombstones, [[ROWS, ROWS]]);
    assert.deepEqual(manifest.revokedKeys.sort(), ['key-1', 'late']);
    await cluster.kill(0, 'SIGKILL');
    await cluster.start(0, ['--port', String(port), '--load-index']);
    r = await reconnectRaw();
    await checkVisible(client);
    assert.equal((await rawAdd(r, 3, 'late')).result.firstId, -1, 'the blocked key is still refused after a snapshot restore');
    assert.deepEqual((await r.call('revokeBatch', { indexId: ID, key: 'key-1' })).result, { outcome: 'already', count: 0 });
  } finally {
    await raw?.close();
    await client?.close();
    await cluster.stop();
  }
});
