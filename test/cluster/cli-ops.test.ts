// Operating commands against real server processes: status, search, save, drop; --version, --help.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IndexClient } from '../../src/index.js';
import { RpcClient } from '../../src/protocol/index.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';
import { runCli, writeNpy } from '../helpers/cli.js';

let cluster: TestCluster;
let client: IndexClient;

before(async () => {
  cluster = await startCluster(2);
  client = await IndexClient.connect(cluster.discovery, { discoveryTimeoutMs: 5000 });
  await client.createIndex('ops', { indexBuilderType: 'flat', dim: 4, metric: 'l2' });
  for (let b = 0; b < 2; b++) {
    const rows = Array.from({ length: 10 }, (_, i) => [b * 10 + i, 0, 0, 0]);
    await client.addIndexData('ops', rows, rows.map((r) => ({ row: r[0] })));
  }
  await client.syncTrain('ops');
  await client.createIndex('pending', { indexBuilderType: 'flat', dim: 4, metric: 'l2', trainNum: 1000 });
  await client.addIndexData('pending', [[1, 2, 3, 4]]);
});

after(async () => {
  await client?.close();
  await cluster?.stop();
});

test('dfaiss --version and --help', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  const v = await runCli(['--version']);
  assert.equal(v.code, 0);
  assert.equal(v.stdout.trim(), pkg.version);
  const h = await runCli(['--help']);
  assert.equal(h.code, 0);
  for (const cmd of ['server', 'launch', 'load', 'status', 'search', 'save', 'drop']) assert.match(h.stdout, new RegExp(`^\\s+${cmd}\\b`, 'm'), cmd);
  const lh = await runCli(['load', '--help']);
  for (const flag of ['--discover', '--mmap', '--mmap-size', '--dimension', '--dstore-fp16', '--cfg', '--bs', '--start', '--index-id', '--load-index']) assert.ok(lh.stdout.includes(flag), flag);
});

test('dfaiss status: every server with its indexes, states and counts (table and JSON)', async () => {
  const r = await runCli(['status', '--discover', cluster.discovery]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /RANK\s+ADDRESS\s+STATUS\s+RSS\s+INDEX\s+STATE\s+NTOTAL\s+BUFFERED/);
  for (const s of cluster.servers) assert.match(r.stdout, new RegExp(`^${s.rank}\\s+127\\.0\\.0\\.1:${s.port}\\s+up\\s+[\\d.]+ MiB\\s+ops\\s+TRAINED\\s+10\\s+0`, 'm'));
  assert.match(r.stdout, /2\/2 servers up; ops: ntotal 20; pending: ntotal 0/);
  const j = await runCli(['status', '--discover', cluster.discovery, '--json']);
  const st = JSON.parse(j.stdout) as { up: number; down: number; servers: Array<{ up: boolean; rank: number; rssBytes: number; indexes: Record<string, { state: string; ntotal: number; buffered: number }> }> };
  assert.equal(st.up, 2);
  assert.equal(st.down, 0);
  const buffered = st.servers.map((s) => s.indexes.pending!.buffered).sort();
  assert.deepEqual(buffered, [0, 1]);
  assert.ok(st.servers.every((s) => s.up && s.rssBytes > 0 && s.indexes.pending!.state === 'NOT_TRAINED'));
  // The FAISS build each server runs, in status and in its hello reply.
  const faiss = (st.servers[0] as unknown as { faiss: { version: string; simd: string; blas: string } }).faiss;
  assert.equal(faiss.version, '1.7.3');
  assert.match(faiss.simd, /^(generic|avx2|avx512)$/);
  assert.match(faiss.blas, /OpenBLAS/);
  const raw = await RpcClient.connect('127.0.0.1', cluster.servers[0]!.port);
  try {
    assert.deepEqual(raw.server.faiss, { version: faiss.version, simd: faiss.simd, blas: faiss.blas });
  } finally {
    await raw.close();
  }
});

test('dfaiss search: --random and --queries, table and --json', async () => {
  const j = await runCli(['search', '--discover', cluster.discovery, '--index-id', 'ops', '--random', '3', '-k', '4', '--json']);
  assert.equal(j.code, 0, j.stderr);
  const out = JSON.parse(j.stdout) as { indexId: string; k: number; nq: number; results: Array<{ query: number; hits: Array<{ score: number; metadata: { row: number } }> }> };
  assert.equal(out.nq, 3);
  assert.equal(out.results.length, 3);
  for (const q of out.results) {
    assert.equal(q.hits.length, 4);
    assert.ok([0, 1].includes(q.hits[0]!.metadata.row), 'random queries in [0,1) are nearest to row 0 or 1');
    assert.ok(q.hits.every((h, i) => i === 0 || h.score >= q.hits[i - 1]!.score), 'best first');
  }
  const qfile = join(cluster.dir, 'q.npy');
  writeNpy(qfile, Float32Array.from([12.2, 0, 0, 0, 3.9, 0, 0, 0]), 4);
  const t = await runCli(['search', '--discover', cluster.discovery, '--index-id', 'ops', '--queries', qfile, '-k', '2']);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /QUERY\s+RANK\s+SCORE\s+METADATA/);
  const first = /^0\s+1\s+(\S+)\s+\{"row":12\}$/m.exec(t.stdout);
  const second = /^1\s+1\s+(\S+)\s+\{"row":4\}$/m.exec(t.stdout);
  assert.ok(first && second, t.stdout);
  assert.ok(Math.abs(Number(first[1]) - 0.04) < 1e-5 && Math.abs(Number(second[1]) - 0.01) < 1e-5, t.stdout);
  assert.match(t.stdout, /2 queries, top-2/);
  const bad = await runCli(['search', '--discover', cluster.discovery, '--index-id', 'nope', '--random', '1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /unknown index 'nope'/);
  const none = await runCli(['search', '--discover', cluster.discovery, '--index-id', 'ops']);
  assert.match(none.stderr, /--queries \/ --random: expected exactly one of them/);
});

test('dfaiss save and drop (drop needs --yes)', async () => {
  const s = await runCli(['save', '--discover', cluster.discovery, '--index-id', 'ops']);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /saved 'ops' on 2 servers \(ntotal 20\)/);
  const no = await runCli(['drop', '--discover', cluster.discovery, '--index-id', 'pending']);
  assert.equal(no.code, 1);
  assert.match(no.stderr, /--yes/);
  const d = await runCli(['drop', '--discover', cluster.discovery, '--index-id', 'pending', '--yes']);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(await client.getNtotal('pending'), 0);
  const st = await client.status();
  assert.ok(st.every((x) => !('pending' in (x.indexes as object))));
  // '../etc' is a valid id now (an encoded folder, issue 12); control characters are not.
  const badId = await runCli(['save', '--discover', cluster.discovery, '--index-id', 'bad\tid']);
  assert.notEqual(badId.code, 0);
  assert.match(badId.stderr, /--index-id/);
});

test('dfaiss status: a killed server shows as DOWN (exit code 2), the others still answer', async () => {
  await cluster.kill(1);
  const r = await runCli(['status', '--discover', cluster.discovery, '--timeout', '2']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stdout, new RegExp(`^\\?\\s+127\\.0\\.0\\.1:${cluster.servers[1]!.port}\\s+DOWN`, 'm'));
  assert.match(r.stdout, new RegExp(`^0\\s+127\\.0\\.0\\.1:${cluster.servers[0]!.port}\\s+up`, 'm'));
  assert.match(r.stdout, /1\/2 servers up; 1 down/);
  assert.match(r.stdout, /is down: .*ECONNREFUSED/);
  const j = await runCli(['status', '--discover', cluster.discovery, '--json']);
  const st = JSON.parse(j.stdout) as { down: number; servers: Array<{ up: boolean }> };
  assert.equal(st.down, 1);
});
