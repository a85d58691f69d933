// Metrics and health endpoints of real `dfaiss server` processes: scraped over HTTP and parsed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, IndexServer } from '../../src/index.js';
import { MetricsHttpServer } from '../../src/server/metrics-http.js';
import { ServerMetrics } from '../../src/server/metrics.js';
import { CLI, startCluster, type TestCluster } from '../helpers/cluster.js';
import { CHILD_ENV, eventLog, runCli, waitGone } from '../helpers/cli.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (the subset prom-client writes). */
function parseProm(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types.set(name!, type!);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of m[2]?.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g) ?? []) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function scrape(port: number): Promise<{ samples: Sample[]; types: Map<string, string>; contentType: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return { ...parseProm(await res.text()), contentType: res.headers.get('content-type') ?? '' };
}

let cluster: TestCluster;
let client: IndexClient;

before(async () => {
  cluster = await startCluster(2, { serverArgs: ['--metrics-port', '0'] });
  client = await IndexClient.connect(cluster.discovery, { discoveryTimeoutMs: 5000 });
});

after(async () => {
  await client?.close();
  await cluster?.stop();
});

test('every server serves Prometheus metrics on its own port: requests, errors, latency, indexes, WAL, snapshots, training, process', async () => {
  const ports = cluster.servers.map((s) => s.metricsPort!);
  assert.ok(ports.every((p) => Number.isInteger(p) && p > 0), `metrics ports in the listening line: ${ports}`);
  assert.notEqual(ports[0], ports[1]);
  const before0 = await scrape(ports[0]!);
  assert.match(before0.contentType, /^text\/plain; version=0\.0\.4/);
  assert.equal(value(before0.samples, 'dfaiss_requests_total', { method: 'search' }), 0, 'every method is listed at 0 from the start');

  // trainNum 1: a flat index then trains on its first batch (with 0 it is trained from creation), which the training histogram counts.
  await client.createIndex('m', { indexBuilderType: 'flat', dim: 8, metric: 'l2', trainNum: 1 });
  for (let b = 0; b < 4; b++) {
    const rows = Array.from({ length: 25 }, (_, i) => Array.from({ length: 8 }, (_, j) => b * 100 + i + j / 10));
    await client.addIndexData('m', rows, rows.map((_, i) => ({ row: b * 25 + i })));
  }
  await client.syncTrain('m');
  const searches = 7;
  for (let i = 0; i < searches; i++) await client.search('m', [Array.from({ length: 8 }, () => i)], 3);
  await assert.rejects(client.search('m', [[1, 2, 3]], 3)); // wrong dimension: refused by the client, never sent
  await client.saveIndex('m');
  // One RPC that fails on the server: search of an index the server does not have.
  const raw = await IndexClient.connectTo([{ host: '127.0.0.1', port: cluster.servers[0]!.port }]);
  try {
    await client.createIndex('other', { indexBuilderType: 'flat', dim: 8, metric: 'l2' });
    await client.dropIndex('other');
    await assert.rejects(raw.saveIndex('missing-index'), /missing-index/);
  } finally {
    await raw.close();
  }

  const status = await client.status();
  for (const [rank, port] of ports.entries()) {
    const { samples, types } = await scrape(port);
    assert.equal(types.get('dfaiss_requests_total'), 'counter');
    assert.equal(types.get('dfaiss_request_duration_seconds'), 'histogram');
    assert.equal(types.get('dfaiss_index_ntotal'), 'gauge');
    assert.equal(value(samples, 'dfaiss_requests_total', { method: 'search', rank: String(rank) }), searches, `rank ${rank}: one search request per client search`);
    assert.equal(value(samples, 'dfaiss_request_duration_seconds_count', { method: 'search' }), searches);
    const sum = value(samples, 'dfaiss_request_duration_seconds_sum', { method: 'search' })!;
    assert.ok(sum > 0 && sum < searches * 5, `search latency sum ${sum}`);
    assert.equal(value(samples, 'dfaiss_request_duration_seconds_bucket', { method: 'search', le: '+Inf' }), searches);
    assert.equal(value(samples, 'dfaiss_requests_total', { method: 'addIndexData' }), 2, 'round-robin: 2 of the 4 batches each');
    assert.equal(value(samples, 'dfaiss_request_errors_total', { method: 'addIndexData' }), 0);
    const info = (status[rank]!.indexes as Record<string, { ntotal: number }>).m!;
    assert.equal(value(samples, 'dfaiss_index_ntotal', { index: 'm' }), info.ntotal);
    assert.equal(info.ntotal, 50);
    assert.equal(value(samples, 'dfaiss_index_buffered', { index: 'm' }), 0);
    assert.equal(value(samples, 'dfaiss_index_buffered_bytes', { index: 'm' }), 0);
    assert.equal(value(samples, 'dfaiss_index_tombstoned', { index: 'm' }), 0);
    assert.equal(value(samples, 'dfaiss_index_state', { index: 'm', state: 'TRAINED' }), 1);
    assert.equal(value(samples, 'dfaiss_index_state', { index: 'm', state: 'NOT_TRAINED' }), 0);
    assert.equal(value(samples, 'dfaiss_index_ntotal', { index: 'other' }), undefined, 'a dropped index disappears');
    assert.ok(value(samples, 'dfaiss_wal_bytes_total', { index: 'm' })! > 2 * 25 * 8 * 4, 'two batches of 25 x 8 float32 went through the WAL');
    assert.ok(value(samples, 'dfaiss_wal_fsync_duration_seconds_count')! >= 2, 'default durability fsyncs every group commit');
    assert.ok(value(samples, 'dfaiss_snapshot_duration_seconds_count', { index: 'm' })! >= 1);
    assert.ok(value(samples, 'dfaiss_training_duration_seconds_count', { index: 'm', kind: 'shard' })! >= 1);
    assert.ok(value(samples, 'dfaiss_connections')! >= 2, 'the test client keeps bulk and search connections');
    assert.ok(value(samples, 'process_resident_memory_bytes')! > 10 * 2 ** 20);
    assert.ok(value(samples, 'nodejs_eventloop_lag_seconds') !== undefined);
  }
  const errors0 = value((await scrape(ports[0]!)).samples, 'dfaiss_request_errors_total', { method: 'saveIndex' });
  const errors1 = value((await scrape(ports[1]!)).samples, 'dfaiss_request_errors_total', { method: 'saveIndex' });
  assert.equal(errors0, 1, 'the failed saveIndex went to server 0 only');
  assert.equal(errors1, 0);
});

test('a shared training is timed once, on the server that trained for the cluster', async () => {
  await client.createIndex('ivf', { indexBuilderType: 'ivf_simple', dim: 8, metric: 'l2', centroids: 4, trainNum: 200 });
  for (let b = 0; b < 4; b++) await client.addIndexData('ivf', Float32Array.from({ length: 80 * 8 }, (_, i) => Math.sin(b * 1000 + i)));
  await client.syncTrain('ivf');
  const counts: number[] = [];
  for (const s of cluster.servers) {
    const { samples } = await scrape(s.metricsPort!);
    counts.push(value(samples, 'dfaiss_training_duration_seconds_count', { index: 'ivf', kind: 'shared' }) ?? 0);
    assert.equal(value(samples, 'dfaiss_index_state', { index: 'ivf', state: 'TRAINED' }), 1);
    assert.equal(value(samples, 'dfaiss_index_ntotal', { index: 'ivf' }), 160);
  }
  assert.deepEqual(counts.sort(), [0, 1]);
});

test('/healthz and /readyz answer 200 on a serving server; other paths 404, other methods 405', async () => {
  const port = cluster.servers[0]!.metricsPort!;
  const health = await fetch(`http://127.0.0.1:${port}/healthz`);
  assert.equal(health.status, 200);
  assert.equal(await health.text(), 'ok\n');
  const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404);
  assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status, 405);
});

test('/readyz is 503 with the reason while the server is not ready', async () => {
  let reason: string | null = 'loading indexes';
  const metrics = new ServerMetrics({ rank: 9, connectionCount: () => 0, indexes: () => [] }, ['search']);
  const http = new MetricsHttpServer({ metrics, notReady: () => reason });
  const { port } = await http.listen('127.0.0.1', 0);
  try {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`);
    assert.equal(r.status, 503);
    assert.equal(await r.text(), 'not ready: loading indexes\n');
    reason = null;
    assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
  } finally {
    await http.close();
  }
});

test('IndexServer: the metrics port opens before the indexes load, and /readyz says 503 while they load', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-ready-'));
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  const server = new IndexServer(0, join(dir, 'data'));
  // Hold the load until the test has seen the 503 (loadAll is private: reached on purpose).
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const held = server as unknown as { loadAll: () => Promise<void> };
  const loadAll = held.loadAll.bind(server);
  held.loadAll = async () => {
    await gate;
    await loadAll();
  };
  const started = server.start({ port: 0, metricsPort: port, loadIndex: true });
  try {
    let r: Response | undefined;
    for (let i = 0; i < 200 && !r; i++) {
      r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
      if (!r) await new Promise((res) => setTimeout(res, 10));
    }
    assert.ok(r, 'the metrics port listens while the indexes load');
    assert.equal(r.status, 503);
    assert.equal(await r.text(), 'not ready: loading indexes\n');
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200, 'alive meanwhile');
    release();
    const addr = await started;
    assert.equal(addr.metricsPort, port);
    assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
  } finally {
    release();
    await started.catch(() => {});
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('metrics are off unless --metrics-port is given', async () => {
  const c = await startCluster(1);
  try {
    assert.equal(c.servers[0]!.metricsPort, undefined);
    const st = await IndexClient.connectTo([{ host: '127.0.0.1', port: c.servers[0]!.port }]);
    try {
      await st.status(); // counted once its reply is written, so the next status sees it
      const [s] = await st.status();
      assert.equal(s!.metricsPort, undefined);
      assert.ok((s!.requests as { requests: number }).requests >= 1, 'request counts are kept without metrics too');
    } finally {
      await st.close();
    }
  } finally {
    await c.stop();
  }
});

/** A port that something else holds for the duration of fn. */
async function withBusyPort(fn: (port: number) => Promise<void>): Promise<void> {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  try {
    await fn((blocker.address() as { port: number }).port);
  } finally {
    await new Promise((r) => blocker.close(r));
  }
}

test('a metrics or RPC port in use: one line naming the port and what to do, no stack trace', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-metrics-'));
  try {
    await withBusyPort(async (busy) => {
      for (const flags of [['--metrics-port', String(busy)], ['--port', String(busy)]]) {
        const r = await runCli(['server', '--rank', '0', '--save-dir', join(dir, 'data'), ...flags], { timeoutMs: 20_000 });
        assert.equal(r.code, 1, r.stderr);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
        assert.equal(
          lines[0],
          `dfaiss server: port ${busy} on 127.0.0.1 is already in use (${flags[0]}): stop the process holding it (e.g. \`ss -ltnp 'sport = :${busy}'\`), or pick another port (0 = any free one)`,
        );
        assert.doesNotMatch(r.stderr, /\bat .*\.js:\d+/);
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launch local --metrics-port: every server gets one (base + rank), listed in the ready event, and serves it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-metrics-launch-'));
  // A free base: two consecutive ports nobody holds right now (bounded search).
  let base = 0;
  for (let attempt = 0; attempt < 20 && base === 0; attempt++) {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const p = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    if (p >= 65535) continue;
    const probe = createServer();
    const ok = await new Promise<boolean>((r) => {
      probe.once('error', () => r(false));
      probe.listen(p + 1, '127.0.0.1', () => r(true));
    });
    if (ok) await new Promise((r) => probe.close(r));
    if (ok) base = p;
  }
  assert.ok(base > 0, 'found two free ports');
  const clash = await runCli(['launch', 'local', '--num-servers', '2', '--save-dir', join(dir, 'data'), '--discovery-config', join(dir, 'd.txt'), '--base-port', String(base), '--metrics-port', String(base + 1)]);
  assert.equal(clash.code, 2);
  assert.equal(clash.stderr, `dfaiss launch local: invalid --metrics-port: expected a range apart from the server ports ${base}-${base + 1}, got ${base + 1}\n`);
  const proc = spawn(process.execPath, [CLI, 'launch', 'local', '--num-servers', '2', '--save-dir', join(dir, 'data'), '--discovery-config', join(dir, 'd.txt'), '--metrics-port', String(base), '--restart-on-crash', '--restart-delay', '100'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: CHILD_ENV,
  });
  const log = eventLog(proc);
  try {
    const ready = await log.wait<{ servers: Array<{ rank: number; pid: number; metricsPort: number }> }>('ready');
    assert.deepEqual(ready.servers.map((s) => s.metricsPort), [base, base + 1]);
    for (const s of ready.servers) {
      const { samples } = await scrape(s.metricsPort);
      assert.equal(value(samples, 'dfaiss_connections', { rank: String(s.rank) }), 0);
    }
    // A restarted server keeps its metrics port (Prometheus's target stays valid).
    process.kill(ready.servers[1]!.pid, 'SIGKILL');
    const up = await log.wait<{ rank: number; pid: number; metricsPort: number; restarts: number }>('up', (e) => e.rank === 1 && e.restarts === 1);
    assert.equal(up.metricsPort, base + 1);
    // (Plain node:http, not fetch: fetch would reuse its kept-alive socket to the killed process.)
    const text = await new Promise<string>((resolve, reject) => {
      get({ host: '127.0.0.1', port: base + 1, path: '/metrics', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(body));
      }).on('error', reject);
    });
    assert.equal(value(parseProm(text).samples, 'dfaiss_connections', { rank: '1' }), 0);
    const pids = [ready.servers[0]!.pid, up.pid];
    process.kill(proc.pid!, 'SIGTERM');
    await log.wait('stopped');
    assert.ok(await waitGone(pids));
  } finally {
    if (proc.exitCode === null) process.kill(proc.pid!, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
