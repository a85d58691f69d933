// `dfaiss launch slurm` against a real single-node Slurm (scripts/slurm-setup.sh installs and
// starts it when missing): submit, discover, index, search, scancel, and check the servers
// are gone. Skipped, with the reason on stderr, only where Slurm cannot be installed or
// started; DFAISS_REQUIRE_SLURM=1 turns that skip into a failure.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, IndexState } from '../../src/index.js';
import { CLI } from '../helpers/cluster.js';

const SETUP = new URL('../../scripts/slurm-setup.sh', import.meta.url).pathname;

let partition = '';
let skipReason = '';
let dir = '';

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'dfaiss-slurm-'));
  const t0 = Date.now();
  const res = spawnSync('bash', [SETUP], { encoding: 'utf8', timeout: 240_000, stdio: ['ignore', 'pipe', 'pipe'] });
  const m = /^partition=(.+)$/m.exec(res.stdout ?? '');
  if (res.status === 0 && m) {
    partition = m[1]!.trim();
    process.stderr.write(`[slurm test] Slurm ready in ${((Date.now() - t0) / 1000).toFixed(1)} s, partition ${partition}\n`);
    return;
  }
  const why = res.error ? res.error.message : `exit code ${res.status}`;
  const tail = (res.stderr ?? '').trim().split('\n').slice(-5).join(' | ');
  skipReason = `Slurm is not available here (scripts/slurm-setup.sh: ${why})${tail ? `: ${tail}` : ''}`;
  if (process.env.DFAISS_REQUIRE_SLURM === '1') throw new Error(skipReason);
  process.stderr.write(`[slurm test] SKIPPING the SLURM launcher tests: ${skipReason}\n`);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const res = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

function sbatchLine(script: string, opt: string): string | undefined {
  return new RegExp(`^#SBATCH --${opt}=(.*)$`, 'm').exec(script)?.[1];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Two consecutive free loopback ports (the two servers of one node use base and base + 1). */
async function freePortPair(): Promise<number> {
  const listen = (port: number) =>
    new Promise<import('node:net').Server | null>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(null));
      s.listen(port, '127.0.0.1', () => resolve(s));
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const a = await listen(0);
    if (!a) continue;
    const port = (a.address() as import('node:net').AddressInfo).port;
    const b = port < 65535 ? await listen(port + 1) : null;
    await new Promise((r) => a.close(r));
    if (b) {
      await new Promise((r) => b.close(r));
      return port;
    }
  }
  throw new Error('no two consecutive free ports found');
}

/** The job's state from squeue; '' once Slurm no longer lists it as pending/running/completing. */
function jobState(jobId: string): string {
  const res = spawnSync('squeue', ['-h', '-j', jobId, '-o', '%T'], { encoding: 'utf8', timeout: 10_000 });
  return res.status === 0 ? res.stdout.trim() : '';
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('--dry-run prints the batch script: 64 servers, 32 per node -> 2 nodes, cpus per task from cpus per node', () => {
  const res = cli([
    'launch', 'slurm', '--dry-run',
    '--log-dir', join(dir, 'logs'), '--discovery-config', join(dir, 'dry.txt'), '--save-dir', join(dir, 'data'),
    '--num-servers', '64', '--num-servers-per-node', '32', '--cpus-per-node', '80', '--mem-gb', '400',
    '--partition', 'dev', '--timeout-min', '4320', '--base-port', '12033', '--comment', 'my run', '--load-index',
  ]);
  assert.equal(res.status, 0, res.stderr);
  const s = res.stdout;
  assert.match(s, /^#!\/bin\/bash\n/);
  assert.equal(sbatchLine(s, 'nodes'), '2');
  assert.equal(sbatchLine(s, 'ntasks'), '64');
  assert.equal(sbatchLine(s, 'ntasks-per-node'), '32');
  assert.equal(sbatchLine(s, 'cpus-per-task'), '2'); // floor(80 / 32)
  assert.equal(sbatchLine(s, 'mem'), '400G');
  assert.equal(sbatchLine(s, 'partition'), 'dev');
  assert.equal(sbatchLine(s, 'time'), '4320');
  assert.equal(sbatchLine(s, 'comment'), '"my run"');
  assert.equal(sbatchLine(s, 'output'), `"${join(dir, 'logs')}/%j_batch.out"`);
  assert.match(s, /srun \\\n {2}--cpus-per-task=2 \\\n/);
  assert.ok(s.includes(`--output=${join(dir, 'logs')}/%j_%t.out`));
  assert.ok(s.includes('--rank "$SLURM_PROCID" --port "$((12033 + SLURM_LOCALID))"'));
  assert.ok(s.includes(`${process.execPath} --max-semi-space-size=2 --interrupt-budget=16896 --minimum-invocations-after-ic-update=50 ${CLI} server`), 'the launchers\' Node flags');
  assert.ok(s.includes('OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}'), 'OpenBLAS\'s pool sized to the threads');
  assert.match(s, /--host 0\.0\.0\.0 \\\n/);
  assert.match(s, /--threads 2 \\\n/); // default: cpus per task
  assert.match(s, /--load-index\n/);
  assert.equal(existsSync(join(dir, 'dry.txt')), false, 'a dry run writes nothing');

  // 5 servers, 2 per node: 3 nodes, at most 2 tasks each; explicit threads.
  const odd = cli([
    'launch', 'slurm', '--dry-run', '--log-dir', 'logs', '--discovery-config', 'd.txt', '--num-servers', '5',
    '--num-servers-per-node', '2', '--cpus-per-node', '5', '--partition', 'p', '--threads-per-server', '4',
  ]);
  assert.equal(odd.status, 0, odd.stderr);
  assert.equal(sbatchLine(odd.stdout, 'nodes'), '3');
  assert.equal(sbatchLine(odd.stdout, 'ntasks'), '5');
  assert.equal(sbatchLine(odd.stdout, 'cpus-per-task'), '2');
  assert.match(odd.stdout, /--threads 4\n/);
  assert.match(odd.stdout, /--port "\$\(\(12032 \+ SLURM_LOCALID\)\)"/); // the original's default port
  assert.doesNotMatch(odd.stdout, /--metrics-port/, 'metrics are off unless asked for');

  // --metrics-port: each server's metrics on that port + its local rank, apart from the RPC ports.
  const withMetrics = cli(['launch', 'slurm', '--dry-run', '--log-dir', 'l', '--discovery-config', 'd', '--num-servers', '4', '--num-servers-per-node', '2', '--cpus-per-node', '2', '--partition', 'p', '--metrics-port', '9100']);
  assert.equal(withMetrics.status, 0, withMetrics.stderr);
  assert.ok(withMetrics.stdout.includes('--port "$((12032 + SLURM_LOCALID))" --metrics-port "$((9100 + SLURM_LOCALID))"'));
  const clash = cli(['launch', 'slurm', '--dry-run', '--log-dir', 'l', '--discovery-config', 'd', '--num-servers', '4', '--num-servers-per-node', '2', '--cpus-per-node', '2', '--partition', 'p', '--base-port', '9100', '--metrics-port', '9101']);
  assert.notEqual(clash.status, 0);
  assert.match(clash.stderr, /invalid --metrics-port: expected a range apart from the server ports 9100-9101/);

  const bad = cli(['launch', 'slurm', '--dry-run', '--log-dir', 'l', '--discovery-config', 'd', '--num-servers', '4', '--num-servers-per-node', '4', '--cpus-per-node', '2', '--partition', 'p']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /invalid --cpus-per-node: expected at least --num-servers-per-node \(4\)/);
});

test('launch slurm on a real Slurm: servers discovered, index + search, scancel stops them', async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const t0 = Date.now();
  const logDir = join(dir, 'logs');
  const discovery = join(dir, 'discovery.txt');
  const saveDir = join(dir, 'data');
  const basePort = await freePortPair();
  let metricsPort = await freePortPair();
  for (let i = 0; i < 10 && Math.abs(metricsPort - basePort) < 2; i++) metricsPort = await freePortPair();
  const res = cli([
    'launch', 'slurm',
    '--log-dir', logDir, '--discovery-config', discovery, '--save-dir', saveDir,
    '--num-servers', '2', '--num-servers-per-node', '2', '--cpus-per-node', '2', '--mem-gb', '1',
    '--partition', partition, '--timeout-min', '5', '--base-port', String(basePort), '--host', '127.0.0.1',
    '--comment', 'dfaiss slurm test', '--metrics-port', String(metricsPort),
  ]);
  assert.equal(res.status, 0, `launch failed: ${res.stderr}`);
  const jobId = /submitted job (\d+)/.exec(res.stdout)?.[1];
  assert.ok(jobId, res.stdout);
  assert.ok(res.stdout.includes(`${logDir}/${jobId}_<task>`), 'prints where the logs go');
  let client: IndexClient | undefined;
  try {
    assert.equal(readFileSync(discovery, 'utf8').split('\n')[0], '2');
    client = await IndexClient.connect(discovery, { discoveryTimeoutMs: 30_000 });
    assert.equal(client.numServers, 2);
    const listed = readFileSync(discovery, 'utf8').trim().split('\n').slice(1).sort();
    assert.deepEqual(listed, [`127.0.0.1,${basePort}`, `127.0.0.1,${basePort + 1}`]);

    // What Slurm actually allocated.
    const show = spawnSync('scontrol', ['show', 'job', jobId], { encoding: 'utf8' }).stdout;
    assert.match(show, /NumNodes=1 /);
    assert.match(show, /NumTasks=2 /);
    assert.match(show, /CPUs\/Task=1 /);
    assert.match(show, /MinMemoryNode=1G/);
    assert.match(show, /TimeLimit=00:05:00/);
    assert.match(show, new RegExp(`Partition=${partition}\\b`));
    assert.match(show, /Comment=dfaiss slurm test/);

    // Index and search across both servers.
    const dim = 16;
    await client.createIndex('slurm', { indexBuilderType: 'flat', dim, metric: 'l2' });
    const rows = Array.from({ length: 200 }, (_, i) => Array.from({ length: dim }, (_, j) => Math.sin(i * 7.1 + j)));
    for (let b = 0; b < 4; b++) {
      const part = rows.slice(b * 50, (b + 1) * 50);
      await client.addIndexData('slurm', part, part.map((_, i) => ({ doc: b * 50 + i })));
    }
    await client.syncTrain('slurm');
    const end = Date.now() + 20_000;
    while ((await client.getState('slurm')) !== IndexState.TRAINED || (await client.getNtotal('slurm')) < 200) {
      assert.ok(Date.now() < end, 'index not TRAINED with 200 vectors within 20 s');
      await sleep(50);
    }
    const hits = await client.search('slurm', [rows[17]!, rows[123]!], 3);
    assert.deepEqual(hits.metadata[0]![0], { doc: 17 });
    assert.deepEqual(hits.metadata[1]![0], { doc: 123 });
    assert.ok(hits.scores[0]![0]! < 1e-6);
    assert.ok(res.stdout.includes(`metrics:        http://<node>:${metricsPort}+<local rank>/metrics`), res.stdout);
    // Each task serves its metrics on metrics port + local rank: both shards' ntotal add up.
    let scraped = 0;
    for (const port of [metricsPort, metricsPort + 1]) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      scraped += Number(/^dfaiss_index_ntotal\{index="slurm",rank="\d"\} (\d+)$/m.exec(text)?.[1] ?? NaN);
    }
    assert.equal(scraped, 200);
    await client.close();
    client = undefined;

    // The servers' PIDs, from their 'listening' line in the per-task logs.
    const pids = [0, 1].map((task) => {
      const line = readFileSync(join(logDir, `${jobId}_${task}.out`), 'utf8').split('\n').find((l) => l.includes('"event":"listening"'));
      assert.ok(line, `no listening line in ${jobId}_${task}.out`);
      return (JSON.parse(line) as { pid: number }).pid;
    });
    assert.ok(pids.every(alive));

    const tCancel = Date.now();
    assert.equal(spawnSync('scancel', [jobId]).status, 0);
    for (let i = 0; i < 150 && jobState(jobId) !== ''; i++) await sleep(200);
    assert.equal(jobState(jobId), '', 'the job is still listed 30 s after scancel');
    for (let i = 0; i < 100 && pids.some(alive); i++) await sleep(100);
    assert.deepEqual(pids.filter(alive), [], 'server processes outlived scancel');
    process.stderr.write(
      `[slurm test] submit -> searched -> cancelled in ${((Date.now() - t0) / 1000).toFixed(1)} s (scancel -> gone ${((Date.now() - tCancel) / 1000).toFixed(1)} s)\n`,
    );
    // Each server shut down gracefully on the SIGTERM Slurm sends.
    for (const task of [0, 1]) assert.match(readFileSync(join(logDir, `${jobId}_${task}.err`), 'utf8'), /shutting down/);
  } finally {
    await client?.close().catch(() => undefined);
    if (jobState(jobId) !== '') spawnSync('scancel', [jobId]);
  }
});

test('--ranks-per-process: one srun task per process of k ranks, ports base + local id * k + i; must divide the servers per node', () => {
  const res = cli(['launch', 'slurm', '--dry-run', '--log-dir', 'l', '--discovery-config', 'd', '--num-servers', '64', '--num-servers-per-node', '32', '--cpus-per-node', '64', '--partition', 'p', '--ranks-per-process', '8']);
  assert.equal(res.status, 0, res.stderr);
  assert.equal(sbatchLine(res.stdout, 'ntasks'), '8');
  assert.equal(sbatchLine(res.stdout, 'ntasks-per-node'), '4');
  assert.equal(sbatchLine(res.stdout, 'cpus-per-task'), '16');
  assert.match(res.stdout, /--rank "\$\(\(SLURM_PROCID \* 8\)\)" --ranks-per-process "\$\(\(64 - SLURM_PROCID \* 8 < 8 \? 64 - SLURM_PROCID \* 8 : 8\)\)" --port "\$\(\(12032 \+ SLURM_LOCALID \* 8\)\)"/);
  assert.match(res.stdout, /--threads 2\b/, 'threads per rank: cpus per node / servers per node');
  const bad = cli(['launch', 'slurm', '--dry-run', '--log-dir', 'l', '--discovery-config', 'd', '--num-servers', '64', '--num-servers-per-node', '32', '--cpus-per-node', '64', '--partition', 'p', '--ranks-per-process', '5']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /invalid --ranks-per-process: expected a divisor of numServersPerNode \(32\)|--ranks-per-process.*divisor/);
});

test('launch slurm --ranks-per-process 2 on a real Slurm: one task serves both ranks, each discovered on its port; scancel stops it', async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const logDir = join(dir, 'logs-multi');
  const discovery = join(dir, 'discovery-multi.txt');
  const basePort = await freePortPair();
  const res = cli([
    'launch', 'slurm', '--log-dir', logDir, '--discovery-config', discovery, '--save-dir', join(dir, 'data-multi'),
    '--num-servers', '2', '--num-servers-per-node', '2', '--ranks-per-process', '2', '--cpus-per-node', '2', '--mem-gb', '1',
    '--partition', partition, '--timeout-min', '5', '--base-port', String(basePort), '--host', '127.0.0.1',
  ]);
  assert.equal(res.status, 0, `launch failed: ${res.stderr}`);
  assert.match(res.stdout, /2 servers in 1 processes/);
  const jobId = /submitted job (\d+)/.exec(res.stdout)?.[1];
  assert.ok(jobId, res.stdout);
  let client: IndexClient | undefined;
  try {
    client = await IndexClient.connect(discovery, { discoveryTimeoutMs: 30_000 });
    assert.equal(client.numServers, 2);
    assert.deepEqual(readFileSync(discovery, 'utf8').trim().split('\n').slice(1).sort(), [`127.0.0.1,${basePort}`, `127.0.0.1,${basePort + 1}`]);
    assert.match(spawnSync('scontrol', ['show', 'job', jobId], { encoding: 'utf8' }).stdout, /NumTasks=1 /);
    assert.deepEqual((await client.status()).map((s) => s.rank).sort(), [0, 1]);
    const dim = 8;
    await client.createIndex('multi', { indexBuilderType: 'flat', dim, metric: 'l2' });
    const rows = Array.from({ length: 40 }, (_, i) => Array.from({ length: dim }, (_, j) => Math.sin(i * 3.3 + j)));
    for (let b = 0; b < 4; b++) await client.addIndexData('multi', rows.slice(b * 10, (b + 1) * 10), Array.from({ length: 10 }, (_, i) => b * 10 + i));
    const end = Date.now() + 20_000;
    while ((await client.getNtotal('multi')) < 40) {
      assert.ok(Date.now() < end, 'not all 40 vectors searchable within 20 s');
      await sleep(50);
    }
    assert.deepEqual((await client.search('multi', [rows[29]!], 1)).metadata[0], [29]);
    await client.close();
    client = undefined;
    const listening = readFileSync(join(logDir, `${jobId}_0.out`), 'utf8').split('\n').filter((l) => l.includes('"event":"listening"')).map((l) => JSON.parse(l) as { rank: number; pid: number });
    assert.deepEqual(listening.map((l) => l.rank).sort(), [0, 1]);
    assert.equal(listening[0]!.pid, listening[1]!.pid, 'one process');
    assert.equal(spawnSync('scancel', [jobId]).status, 0);
    for (let i = 0; i < 150 && jobState(jobId) !== ''; i++) await sleep(200);
    for (let i = 0; i < 100 && alive(listening[0]!.pid); i++) await sleep(100);
    assert.ok(!alive(listening[0]!.pid), 'the server process outlived scancel');
  } finally {
    await client?.close().catch(() => undefined);
    if (jobState(jobId) !== '') spawnSync('scancel', [jobId]);
  }
});

test('an impossible request fails at submit with sbatch\'s reason (EnforcePartLimits), not a job pending forever', (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const before = spawnSync('squeue', ['-h', '-o', '%i'], { encoding: 'utf8' }).stdout.trim();
  // One server per node on a one-node partition: two nodes.
  const res = cli([
    'launch', 'slurm', '--log-dir', join(dir, 'logs2'), '--discovery-config', join(dir, 'd2.txt'), '--save-dir', join(dir, 'data2'),
    '--num-servers', '2', '--num-servers-per-node', '1', '--cpus-per-node', '1', '--mem-gb', '1', '--partition', partition, '--timeout-min', '1',
  ]);
  assert.equal(res.status, 1, res.stderr);
  assert.match(res.stderr, /^dfaiss launch slurm: sbatch failed \(exit code 1\): .*(Node count specification invalid|node configuration is not available)/s);
  assert.equal(spawnSync('squeue', ['-h', '-o', '%i'], { encoding: 'utf8' }).stdout.trim(), before, 'no job was queued');
});
