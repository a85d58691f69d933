// The client entry needs no FAISS (issue 13): a process that cannot load the native addon
// imports 'dfaiss/client' and creates, fills and searches an index on a live cluster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startCluster } from '../helpers/cluster.js';

const NO_NATIVE = new URL('../helpers/no-native.mjs', import.meta.url).pathname;
const ROOT = new URL('../..', import.meta.url).pathname;

const script = `
const { IndexClient, IndexState } = await import('dfaiss/client');
const client = await IndexClient.connect(process.argv[1]);
await client.createIndex('c', { indexBuilderType: 'flat', dim: 4, metric: 'l2' });
await client.addIndexData('c', [[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]], ['a', 'b', 'c']);
while ((await client.getState('c')) !== IndexState.TRAINED) await new Promise((r) => setTimeout(r, 20));
const r = await client.search('c', [[0, 1, 0, 0]], 2);
console.log(JSON.stringify({ ntotal: await client.getNtotal('c'), first: r.metadata[0][0] }));
await client.close();
`;

test("'dfaiss/client' runs a search against a live cluster in a process that cannot load native code", { timeout: 60_000 }, async () => {
  const cluster = await startCluster(2);
  try {
    // The guard works: the main entry (which has the FAISS binding) fails to import there.
    const full = spawnSync(process.execPath, ['--import', NO_NATIVE, '--input-type=module', '-e', "await import('dfaiss')"], { cwd: ROOT, encoding: 'utf8' });
    assert.notEqual(full.status, 0);
    assert.match(full.stderr, /native code imported|no native addons/);
    const r = spawnSync(process.execPath, ['--import', NO_NATIVE, '--input-type=module', '-e', script, cluster.discovery], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim()), { ntotal: 3, first: 'c' });
  } finally {
    await cluster.stop();
  }
});
