// Record commands against real server processes (issue 16): dfaiss load --row-ids /
// --ids-from, dfaiss get, dfaiss delete.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient } from '../../src/index.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { runCli, writeNpy } from '../helpers/cli.js';

let cluster: TestCluster;
let dir: string;
const dim = 4;
const rows = 50;
const data = Float32Array.from({ length: rows * dim }, (_, i) => (i % dim === 0 ? Math.floor(i / dim) : 0));

before(async () => {
  cluster = await startCluster(2);
  dir = mkdtempSync(join(tmpdir(), 'dfaiss-cli-rec-'));
  writeNpy(join(dir, 'v.npy'), data, dim);
  writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ index_builder_type: 'flat', dim, metric: 'l2' }));
});

after(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('dfaiss load --row-ids, then get and delete by id (table and JSON); a resumed load stores no row twice', async () => {
  const load = await runCli(['load', '--discover', cluster.discovery, '--mmap', join(dir, 'v.npy'), '--cfg', join(dir, 'cfg.json'), '--index-id', 'rows', '--row-ids', '--bs', '10', '--json']);
  assert.equal(load.code, 0, load.stderr);
  // The same rows again (as after an interrupted load resumed from an earlier --start): upserts, not duplicates.
  const again = await runCli(['load', '--discover', cluster.discovery, '--mmap', join(dir, 'v.npy'), '--index-id', 'rows', '--load-index', '--row-ids', '--start', '20', '--bs', '10', '--json']);
  assert.equal(again.code, 0, again.stderr);
  const client = await IndexClient.connect(cluster.discovery);
  assert.equal(await client.getNtotal('rows'), rows);
  await client.close();
  const get = await runCli(['get', '--discover', cluster.discovery, '--index-id', 'rows', '--ids', '3,42,777', '--embeddings', '--json']);
  assert.equal(get.code, 0, get.stderr);
  assert.deepEqual(JSON.parse(get.stdout), { indexId: 'rows', records: [{ id: 3, metadata: 3, embedding: [3, 0, 0, 0] }, { id: 42, metadata: 42, embedding: [42, 0, 0, 0] }], unknown: [777] });
  const table = await runCli(['get', '--discover', cluster.discovery, '--index-id', 'rows', '--ids', '5']);
  assert.match(table.stdout, /^ID\s+METADATA\n-+\s+-+\n5\s+5$/m);
  const del = await runCli(['delete', '--discover', cluster.discovery, '--index-id', 'rows', '--ids', '3,4,777']);
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /deleted 2 of 3 records from 'rows'; unknown: 777/);
  const search = await runCli(['search', '--discover', cluster.discovery, '--index-id', 'rows', '--random', '1', '-k', '5', '--json']);
  const hits = (JSON.parse(search.stdout) as { results: Array<{ hits: Array<{ metadata: number }> }> }).results[0]!.hits.map((h) => h.metadata);
  assert.deepEqual([...hits].sort((a, b) => a - b), [0, 1, 2, 5, 6], 'deleted rows 3 and 4 are gone');
  const bad = await runCli(['delete', '--discover', cluster.discovery, '--index-id', 'rows']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--ids \/ --ids-from/);
});

test('dfaiss load --ids-from: string and integer ids from a file; a short id file is refused', async () => {
  const ids = Array.from({ length: rows }, (_, i) => (i % 2 ? `doc-${i}` : String(i)));
  writeFileSync(join(dir, 'ids.txt'), `${ids.join('\n')}\n`);
  const load = await runCli(['load', '--discover', cluster.discovery, '--mmap', join(dir, 'v.npy'), '--cfg', join(dir, 'cfg.json'), '--index-id', 'named', '--ids-from', join(dir, 'ids.txt'), '--json']);
  assert.equal(load.code, 0, load.stderr);
  writeFileSync(join(dir, 'del.txt'), 'doc-1\n2\n');
  const del = await runCli(['delete', '--discover', cluster.discovery, '--index-id', 'named', '--ids-from', join(dir, 'del.txt'), '--json']);
  assert.deepEqual(JSON.parse(del.stdout), { indexId: 'named', deleted: 2, unknown: [] });
  const get = await runCli(['get', '--discover', cluster.discovery, '--index-id', 'named', '--ids', 'doc-1,doc-3,4', '--json']);
  assert.deepEqual(JSON.parse(get.stdout), { indexId: 'named', records: [{ id: 'doc-3', metadata: 3 }, { id: 4, metadata: 4 }], unknown: ['doc-1'] });
  writeFileSync(join(dir, 'short.txt'), 'a\nb\n');
  const short = await runCli(['load', '--discover', cluster.discovery, '--mmap', join(dir, 'v.npy'), '--cfg', join(dir, 'cfg.json'), '--index-id', 'short', '--ids-from', join(dir, 'short.txt')]);
  assert.notEqual(short.code, 0);
  assert.match(short.stderr, /--ids-from/);
});
