// The CLI's guiding messages, each against real server processes: misspelled cfg keys,
// loading into a non-empty index, waiting for the discovery file, where a dimension came
// from, search --allow-partial, examples in --help, and log formats.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient } from '../../src/index.js';
import { CLI, startCluster, type TestCluster } from '../helpers/cluster.js';
import { CHILD_ENV, collect, runCli, writeFvecs, writeNpy } from '../helpers/cli.js';

const DIM = 8;
let cluster: TestCluster;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dfaiss-cli-guide-'));
  cluster = await startCluster(2);
  writeFvecs(join(dir, 'v.fvecs'), Float32Array.from({ length: 200 * DIM }, (_, i) => Math.sin(i)), DIM);
  writeFileSync(join(dir, 'flat.json'), JSON.stringify({ index_builder_type: 'flat', dim: String(DIM), metric: 'l2' }));
});

after(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const load = (args: string[]) => runCli(['load', '--discover', cluster.discovery, '--mmap', join(dir, 'v.fvecs'), '--progress-interval', '0', ...args]);

test('a misspelled cfg key is an error with a did-you-mean; the original\'s snake_case file with known extras loads', async () => {
  for (const [typo, meant] of [['metrik', 'metric'], ['nprob', 'nprobe'], ['centroid', 'centroids'], ['trainNum_', 'trainNum']] as const) {
    const file = join(dir, `typo-${typo}.json`);
    writeFileSync(file, JSON.stringify({ index_builder_type: 'flat', dim: DIM, [typo]: 1 }));
    const r = await load(['--cfg', file, '--index-id', 'typo']);
    assert.equal(r.code, 1, r.stderr);
    assert.ok(r.stderr.startsWith(`dfaiss load: unknown index config key '${typo}' in ${file}: did you mean '${meant}'?`), r.stderr);
    assert.match(r.stderr, /custom settings go inside "extra"/);
  }
  const st = await runCli(['status', '--discover', cluster.discovery, '--json']);
  assert.doesNotMatch(st.stdout, /"typo"/, 'nothing was created');
  // The original's scripts/idx_cfg.json shape: strings for numbers, knnlm's extras at top level.
  const original = join(dir, 'idx_cfg.json');
  writeFileSync(original, JSON.stringify({ index_builder_type: 'knnlm', dim: String(DIM), centroids: '4', train_num: '0', metric: 'l2', nprobe: '2', code_size: '4', bits_per_vector: '4', buffer_bsz: '100', extra: { owner: 'me' } }));
  const ok = await load(['--cfg', original, '--index-id', 'orig', '--json', '--no-save']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((JSON.parse(ok.stdout) as { ntotal: number }).ntotal, 200);
});

test('load into an index that already holds vectors refuses without --append, and appends with it', async () => {
  const first = await load(['--cfg', join(dir, 'flat.json'), '--index-id', 'twice', '--json']);
  assert.equal(first.code, 0, first.stderr);
  const again = await load(['--cfg', join(dir, 'flat.json'), '--index-id', 'twice']);
  assert.equal(again.code, 1);
  assert.equal(
    again.stderr.trim().split('\n').at(-1),
    "dfaiss load: index 'twice' already holds 200 vectors: loading would store these rows next to them (twice if it is the same file). Pass --append to add anyway (e.g. to resume with --start), or drop the index first ('dfaiss drop --index-id twice --yes')",
  );
  const client = await IndexClient.connect(cluster.discovery, { discoveryTimeoutMs: 5000 });
  try {
    assert.equal(await client.getNtotal('twice'), 200, 'the refused load sent nothing');
    const appended = await load(['--cfg', join(dir, 'flat.json'), '--index-id', 'twice', '--append', '--json']);
    assert.equal(appended.code, 0, appended.stderr);
    assert.equal(await client.getNtotal('twice'), 400);
  } finally {
    await client.close();
  }
});

test('commands waiting for the discovery file say what they wait for every few seconds, then give up naming the flag', async () => {
  const missing = join(dir, 'nowhere.txt');
  const t0 = Date.now();
  const r = await runCli(['load', '--discover', missing, '--mmap', join(dir, 'v.fvecs'), '--cfg', join(dir, 'flat.json'), '--discovery-timeout', '4']);
  assert.equal(r.code, 1);
  assert.ok(Date.now() - t0 < 15_000);
  const lines = r.stderr.trim().split('\n');
  assert.ok(lines.length >= 2, r.stderr);
  assert.match(lines[0]!, new RegExp(`^dfaiss load: waiting for the servers: ${missing} does not exist yet \\(3 s of 4 s, --discovery-timeout <sec>\\)$`));
  assert.equal(lines.at(-1), `dfaiss load: gave up waiting for the discovery file after 4 s: ${missing} does not exist yet. Start the servers ('dfaiss launch local --discovery-config ${missing} ...'), check the path, or wait longer with --discovery-timeout <sec>`);

  // A file that lists fewer servers than its count line, for search (its --wait).
  const partial = join(dir, 'partial.txt');
  writeFileSync(partial, `2\n127.0.0.1,${cluster.servers[0]!.port}\n`);
  const s = await runCli(['search', '--discover', partial, '--index-id', 'twice', '--random', '1', '--wait', '4']);
  assert.equal(s.code, 1);
  assert.match(s.stderr, new RegExp(`^dfaiss search: waiting for the servers: ${partial} lists 1 of 2 servers \\(3 s of 4 s, --wait <sec>\\)$`, 'm'));
  assert.match(s.stderr, /gave up waiting for the discovery file after 4 s: .* lists 1 of 2 servers/);
  assert.doesNotMatch(s.stderr, /!=/, "not the library's terse '-1 != 0 in server list'");
});

test('dimension errors name where the dimension came from: the index on the servers for search --queries', async () => {
  writeNpy(join(dir, 'q5.npy'), new Float32Array(10), 5);
  const r = await runCli(['search', '--discover', cluster.discovery, '--index-id', 'twice', '--queries', join(dir, 'q5.npy')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^dfaiss search: invalid the index 'twice' \\(dim ${DIM}\\): expected 5, the dimension in the \\.npy header of .*q5\\.npy, got ${DIM}`));
  assert.doesNotMatch(r.stderr, /--dimension/);
});

test('search --allow-partial answers from the live servers and names the missing one (exit code 2); without it the search fails', async () => {
  const c = await startCluster(2);
  try {
    const client = await IndexClient.connect(c.discovery, { discoveryTimeoutMs: 5000 });
    await client.createIndex('p', { indexBuilderType: 'flat', dim: 4, metric: 'l2' });
    for (let b = 0; b < 2; b++) await client.addIndexData('p', Array.from({ length: 10 }, (_, i) => [b * 10 + i, 0, 0, 0]), Array.from({ length: 10 }, (_, i) => b * 10 + i));
    await client.syncTrain('p');
    await client.close();
    const dead = c.servers[1]!.port;
    await c.kill(1);
    const strict = await runCli(['search', '--discover', c.discovery, '--index-id', 'p', '--random', '1', '-k', '3', '--timeout', '5']);
    assert.equal(strict.code, 1);
    assert.match(strict.stderr, new RegExp(`127\\.0\\.0\\.1:${dead}`));
    const partial = await runCli(['search', '--discover', c.discovery, '--index-id', 'p', '--random', '1', '-k', '3', '--allow-partial', '--timeout', '5']);
    assert.equal(partial.code, 2, partial.stderr);
    assert.match(partial.stdout, /1 queries, top-3, [\d.]+ ms across 1 servers/);
    assert.match(partial.stdout, new RegExp(`^PARTIAL: no answer from 127\\.0\\.0\\.1:${dead}: their hits are missing \\(exit code 2\\)$`, 'm'));
    assert.equal(partial.stdout.split('\n').filter((l) => /^0\s+\d\s/.test(l)).length, 3, 'three hits from the live server');
    const json = await runCli(['search', '--discover', c.discovery, '--index-id', 'p', '--random', '1', '-k', '3', '--allow-partial', '--json', '--timeout', '5']);
    const j = JSON.parse(json.stdout) as { missing: Array<{ server: string }>; results: Array<{ hits: unknown[] }> };
    assert.deepEqual(j.missing.map((m) => m.server), [`127.0.0.1:${dead}`]);
    assert.equal(j.results[0]!.hits.length, 3);
  } finally {
    await c.stop();
  }
});

test('every --help shows an example', async () => {
  for (const cmd of [[], ['server'], ['launch'], ['launch', 'local'], ['launch', 'slurm'], ['load'], ['status'], ['search'], ['save'], ['drop'], ['dashboard']]) {
    const r = await runCli([...cmd, '--help']);
    assert.equal(r.code, 0, `${cmd.join(' ')}: ${r.stderr}`);
    assert.match(r.stdout, /\nExamples?:\n {2}(echo|dfaiss|ssh) /, `dfaiss ${cmd.join(' ')} --help`);
  }
});

test('logs: JSON when piped (or --log-format json), readable lines with local ISO times with --log-format pretty', async () => {
  const runServer = async (extra: string[]): Promise<string> => {
    const proc = spawn(process.execPath, [CLI, ...extra, 'server', '--rank', '0', '--save-dir', join(dir, 'logs')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...CHILD_ENV, DFAISS_LOG_LEVEL: 'info' } });
    const done = collect(proc, 20_000);
    await new Promise<void>((resolve) => proc.stdout!.once('data', () => resolve()));
    process.kill(proc.pid!, 'SIGTERM');
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    return r.stderr;
  };
  for (const extra of [[], ['--log-format', 'json']]) {
    const lines = (await runServer(extra)).trim().split('\n');
    assert.ok(lines.length >= 2);
    for (const l of lines) {
      const j = JSON.parse(l) as { time: number; msg: string };
      assert.equal(typeof j.time, 'number');
    }
  }
  const pretty = (await runServer(['--log-format', 'pretty'])).trim().split('\n');
  assert.ok(pretty.some((l) => /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}\] INFO: index server listening /.test(l)), pretty.join('\n'));
  assert.ok(pretty.every((l) => !l.startsWith('{')));

  // On a terminal (a pty from util-linux's `script`), auto is pretty, in colour.
  // 10 s: on 2 busy cores a server took more than 2 s to print its first line (seen at load 13).
  const cmd = `timeout -s TERM 10 ${process.execPath} ${CLI} server --rank 0 --save-dir ${join(dir, 'logs')}`;
  const tty = await collect(spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...CHILD_ENV, DFAISS_LOG_LEVEL: 'info' } }), 20_000);
  // eslint-disable-next-line no-control-regex
  const plain = tty.stdout.replace(/\x1b\[[0-9;]*m/g, '').split(/\r?\n/);
  assert.ok(tty.stdout.includes('\x1b['), 'colours on a terminal');
  assert.ok(plain.some((l) => /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}\] INFO: index server listening /.test(l)), plain.join('\n'));
  assert.ok(plain.some((l) => l.startsWith('{"event":"listening"')), 'stdout keeps its JSON event line');
});
