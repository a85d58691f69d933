// `dfaiss launch local` as a real process tree, and the programmatic LocalCluster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, IndexState, parseDiscovery } from '../../src/index.js';
import { LocalCluster } from '../../src/launch/local.js';
import { CLI } from '../helpers/cluster.js';
import { CHILD_ENV, alive, collect, eventLog, runCli, waitGone } from '../helpers/cli.js';

interface ReadyEvent {
  discovery: string;
  launcherPid: number;
  servers: Array<{ rank: number; host: string; port: number; pid: number }>;
}

function launch(dir: string, n: number, extra: string[] = []) {
  const args = [CLI, 'launch', 'local', '--num-servers', String(n), '--save-dir', join(dir, 'data'), '--discovery-config', join(dir, 'discovery.txt'), '--threads-per-server', '1', ...extra];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: CHILD_ENV });
  return { proc, log: eventLog(proc), done: collect(proc, 60_000, args) };
}

async function waitState(client: IndexClient, id: string, state: IndexState): Promise<void> {
  const end = Date.now() + 20_000;
  while ((await client.getState(id)) !== state) {
    if (Date.now() > end) throw new Error(`${id} not ${state} after 20 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('launch local: complete discovery file, index + search through it, SIGTERM stops every server', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-launch-'));
  const { proc, log, done } = launch(dir, 3);
  try {
    const ready = await log.wait<ReadyEvent>('ready');
    assert.equal(ready.servers.length, 3);
    const disc = parseDiscovery(readFileSync(join(dir, 'discovery.txt'), 'utf8'));
    assert.equal(disc.expected, 3);
    assert.deepEqual(
      disc.servers.map((s) => s.port).sort(),
      ready.servers.map((s) => s.port).sort(),
    );
    for (const s of ready.servers) assert.ok(alive(s.pid), `server ${s.rank} runs`);

    const client = await IndexClient.connect(join(dir, 'discovery.txt'), { discoveryTimeoutMs: 5000 });
    assert.equal(client.numServers, 3);
    await client.createIndex('docs', { indexBuilderType: 'flat', dim: 4, metric: 'l2' });
    for (let b = 0; b < 3; b++) {
      const rows = Array.from({ length: 10 }, (_, i) => [b * 10 + i, 0, 0, 0]);
      await client.addIndexData('docs', rows, rows.map((r) => `row${r[0]}`));
    }
    await client.syncTrain('docs');
    await waitState(client, 'docs', IndexState.TRAINED);
    assert.equal(await client.getNtotal('docs'), 30);
    const r = await client.search('docs', [[17.2, 0, 0, 0]], 2);
    assert.deepEqual(r.metadata[0], ['row17', 'row18']);
    await client.close();

    process.kill(proc.pid!, 'SIGTERM');
    const res = await done;
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /"event":"stopped"/);
    assert.ok(await waitGone(ready.servers.map((s) => s.pid), 5000), 'every server exited');
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launch local --restart-on-crash: a SIGKILLed server comes back on its port with its saved shard', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-launch-'));
  const { proc, log, done } = launch(dir, 2, ['--restart-on-crash', '--restart-delay', '50']);
  const pids: number[] = [];
  try {
    const ready = await log.wait<ReadyEvent>('ready');
    pids.push(...ready.servers.map((s) => s.pid));
    const client = await IndexClient.connect(ready.discovery, { discoveryTimeoutMs: 5000 });
    await client.createIndex('kept', { indexBuilderType: 'flat', dim: 4, metric: 'l2' });
    for (let b = 0; b < 4; b++) await client.addIndexData('kept', Array.from({ length: 5 }, (_, i) => [b * 5 + i, 1, 2, 3]), Array.from({ length: 5 }, (_, i) => b * 5 + i));
    await client.syncTrain('kept');
    await waitState(client, 'kept', IndexState.TRAINED);
    await client.saveIndex('kept');
    await client.close();

    const victim = ready.servers[1]!;
    process.kill(victim.pid, 'SIGKILL');
    const ev = await log.wait<{ rank: number; willRestart: boolean }>('exit');
    assert.equal(ev.rank, 1);
    assert.equal(ev.willRestart, true);
    const up = await log.wait<{ rank: number; port: number; pid: number; restarts: number }>('up', (e) => e.restarts === 1);
    pids.push(up.pid);
    assert.equal(up.rank, 1);
    assert.equal(up.restarts, 1);
    assert.equal(up.port, victim.port, 'same port: the discovery file stays valid');
    assert.notEqual(up.pid, victim.pid);

    const again = await IndexClient.connect(ready.discovery, { discoveryTimeoutMs: 5000 });
    assert.equal(await again.getNtotal('kept'), 20, 'the restarted server loaded its saved shard');
    await again.close();

    process.kill(proc.pid!, 'SIGTERM');
    const res = await done;
    assert.equal(res.code, 0, res.stderr);
    assert.ok(await waitGone(pids, 5000));
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launch local: when the launcher is SIGKILLed, its servers stop by themselves', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-launch-'));
  const { proc, log, done } = launch(dir, 2, ['--base-port', String(20_000 + 2 * (process.pid % 5000))]);
  try {
    const ready = await log.wait<ReadyEvent>('ready');
    assert.deepEqual(ready.servers.map((s) => s.port - ready.servers[0]!.port), [0, 1], '--base-port + rank');
    process.kill(proc.pid!, 'SIGKILL');
    await done;
    assert.ok(await waitGone(ready.servers.map((s) => s.pid), 10_000), 'servers noticed the launcher is gone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launch local --secret-file: every server requires the secret; the CLI commands pass it with --secret-file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-launch-'));
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'correct horse battery staple\n', { mode: 0o600 });
  const { proc, log, done } = launch(dir, 2, ['--secret-file', secret]);
  try {
    const ready = await log.wait<ReadyEvent>('ready');
    const disc = join(dir, 'discovery.txt');
    const without = await runCli(['status', '--discover', disc, '--json'], { env: { ...CHILD_ENV, DFAISS_SECRET: '' } });
    assert.equal(without.code, 2, 'no secret: the servers refuse the status call');
    assert.equal((JSON.parse(without.stdout) as { down: number }).down, 2);
    assert.equal((JSON.parse(without.stdout) as { servers: Array<{ refused?: boolean }> }).servers.filter((s) => s.refused).length, 2, 'refused, not down');
    const withSecret = await runCli(['status', '--discover', disc, '--json', '--secret-file', secret]);
    assert.equal(withSecret.code, 0, withSecret.stderr);
    assert.equal((JSON.parse(withSecret.stdout) as { up: number }).up, 2);
    process.kill(proc.pid!, 'SIGTERM');
    assert.equal((await done).code, 0);
    assert.ok(await waitGone(ready.servers.map((s) => s.pid), 5000));
  } finally {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launch local: bad flags fail with a message naming the flag', async () => {
  let r = await runCli(['launch', 'local', '--num-servers', '0', '--save-dir', '/tmp/x', '--discovery-config', '/tmp/x/d']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--num-servers expects an integer from 1/);
  r = await runCli(['launch', 'local', '--num-servers', '4', '--base-port', '65534', '--save-dir', '/tmp/x', '--discovery-config', '/tmp/x/d']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--base-port 65534 \+ --num-servers 4/);
  r = await runCli(['launch', 'local', '--num-servers', '2', '--save-dir', '/tmp/x']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--discovery-config/);
  r = await runCli(['launch', 'local', '--num-servers', '2', '--save-dir', '/tmp/x', '--discovery-config', '/tmp/x/d', '--tls-key', '/nonexistent/key.pem']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--tls-key/);
});

test('LocalCluster (programmatic): start, servers, discoveryConfig, stop', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-launch-'));
  const cluster = new LocalCluster({ numServers: 2, saveDir: join(dir, 'data'), discoveryConfig: join(dir, 'd.txt'), threadsPerServer: 1, serverLogs: 'capture', serverLogLevel: 'warn' });
  try {
    const servers = await cluster.start();
    assert.deepEqual(servers.map((s) => [s.rank, s.status]), [[0, 'up'], [1, 'up']]);
    assert.equal(cluster.discoveryConfig, join(dir, 'd.txt'));
    const client = await IndexClient.connect(cluster.discoveryConfig, { discoveryTimeoutMs: 5000 });
    assert.equal((await client.status()).length, 2);
    await client.close();
    const pids = servers.map((s) => s.pid);
    await cluster.stop();
    assert.deepEqual(cluster.servers.map((s) => s.status), ['stopped', 'stopped']);
    assert.ok(pids.every((p) => !alive(p)));
    await cluster.stop(); // idempotent
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('LocalCluster: restarts are bounded (maxRestarts per window), then the server stays down and allDown fires', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-launch-'));
  const cluster = new LocalCluster({
    numServers: 1,
    saveDir: join(dir, 'data'),
    discoveryConfig: join(dir, 'd.txt'),
    threadsPerServer: 1,
    serverLogs: 'capture',
    serverLogLevel: 'warn',
    restartOnCrash: true,
    maxRestarts: 1,
    restartDelayMs: 10,
  });
  const events: string[] = [];
  cluster.on('exit', (e) => events.push(`exit:${e.willRestart}`));
  cluster.on('up', (s) => events.push(`up:${s.restarts}`));
  cluster.on('giveUp', () => events.push('giveUp'));
  const allDown = new Promise<void>((r) => cluster.once('allDown', () => r()));
  try {
    const [first] = await cluster.start();
    const restarted = new Promise<number>((r) => cluster.once('up', (s) => r(s.pid)));
    process.kill(first!.pid, 'SIGKILL');
    const pid = await restarted;
    process.kill(pid, 'SIGKILL');
    await allDown;
    assert.deepEqual(events, ['up:0', 'exit:true', 'up:1', 'exit:false', 'giveUp']);
    assert.equal(cluster.servers[0]!.status, 'down');
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('LocalCluster with ranksPerProcess: 4 ranks in 2 processes, each rank on its port; a crash restarts both ranks of the process on their ports, with their data', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-launch-'));
  const cluster = new LocalCluster({ numServers: 4, ranksPerProcess: 2, saveDir: join(dir, 'data'), discoveryConfig: join(dir, 'd.txt'), threadsPerServer: 1, serverLogs: 'capture', serverLogLevel: 'warn', restartOnCrash: true, restartDelayMs: 10 });
  try {
    const servers = await cluster.start();
    assert.deepEqual(servers.map((s) => s.rank), [0, 1, 2, 3]);
    assert.equal(servers[0]!.pid, servers[1]!.pid);
    assert.equal(servers[2]!.pid, servers[3]!.pid);
    assert.notEqual(servers[0]!.pid, servers[2]!.pid);
    assert.equal(new Set(servers.map((s) => s.port)).size, 4);
    const client = await IndexClient.connect(cluster.discoveryConfig);
    try {
      await client.createIndex('lc', { indexBuilderType: 'flat', dim: 4, metric: 'l2' });
      for (let i = 0; i < 8; i++) await client.addIndexData('lc', [[i, 0, 0, 0]], [i]);
      assert.equal(await client.getNtotal('lc'), 8);
      const ups: number[] = [];
      const bothUp = new Promise<void>((r) => cluster.on('up', (s) => ups.push(s.rank) === 2 && r()));
      process.kill(servers[0]!.pid, 'SIGKILL');
      await bothUp;
      assert.deepEqual(ups.sort(), [0, 1]);
      const now = cluster.servers;
      assert.deepEqual(now.map((s) => s.port), servers.map((s) => s.port), 'same ports after the restart');
      assert.equal(now[0]!.pid, now[1]!.pid);
      assert.notEqual(now[0]!.pid, servers[0]!.pid);
      assert.deepEqual(now.map((s) => s.restarts), [1, 1, 0, 0]);
      for (let i = 0; (await client.getNtotal('lc').catch(() => -1)) !== 8; i++) {
        assert.ok(i < 200, 'both restarted ranks serve their vectors again');
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual((await client.search('lc', [[5, 0, 0, 0]], 1)).metadata[0], [5]);
    } finally {
      await client.close();
    }
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
