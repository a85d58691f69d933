/**
 * Security options through the command line: `dfaiss server --secret-file`, DFAISS_SECRET,
 * --tls-key/--tls-cert, --max-frame-mb/--max-connections, as real processes on loopback
 * (dist/cli/main.js: run `npx tsc -p tsconfig.json` first). Processes are stopped by PID.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForListening } from '../../src/launch/listening.js';
import { AuthError, ConnectionError, IndexClient } from '../../src/index.js';
import { RpcClient } from '../../src/protocol/index.js';
import { CLI } from '../helpers/cluster.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

const SECRET = 'cli-test-secret-5f1b2c3d4e5f60718293a4b5';

interface ServerProc {
  proc: ChildProcess;
  port: number;
  /** Everything written to stderr so far (JSON log lines). */
  stderr(): string;
  stop(): Promise<number | null>;
}

const procs: ServerProc[] = [];
let dir: string;
let pki: TestPki;
before(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npx tsc -p tsconfig.json' first`);
  dir = mkdtempSync(join(tmpdir(), 'dfaiss-cli-security-'));
  pki = makeTestPki();
});
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  pki.remove();
  rmSync(dir, { recursive: true, force: true });
});

function spawnServer(args: string[], env: Record<string, string> = {}): { proc: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const proc = spawn(process.execPath, [CLI, 'server', '--rank', '0', '--port', '0', '--save-dir', join(dir, 'data'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE', DFAISS_LOG_LEVEL: 'info', DFAISS_SECRET: '', ...env },
  });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { proc, stderr: () => err, exited };
}

async function startServer(args: string[], env: Record<string, string> = {}): Promise<ServerProc> {
  const { proc, stderr, exited } = spawnServer(args, env);
  const port = await waitForListening(proc, { detail: stderr });
  const server: ServerProc = {
    proc,
    port,
    stderr,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid!, 'SIGTERM');
      return exited;
    },
  };
  procs.push(server);
  return server;
}

function secretFile(name: string, content: string, mode = 0o600): string {
  const file = join(dir, name);
  writeFileSync(file, content, { mode });
  return file;
}

async function waitForLog(server: ServerProc, pattern: RegExp, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pattern.test(server.stderr())) {
    if (Date.now() > end) throw new Error(`no log line matching ${pattern} in:\n${server.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('dfaiss server security flags', () => {
  it('--secret-file end to end: good clients index and search; wrong or missing secrets get AuthError and are logged; the secret never shows', async () => {
    const file = secretFile('secret', `${SECRET}\n`);
    const server = await startServer(['--secret-file', file]);
    const address = [{ host: '127.0.0.1', port: server.port }];
    const client = await IndexClient.connectTo(address, { secretFile: file });
    const dim = 8;
    await client.createIndex('cli-auth', { indexBuilderType: 'flat', dim, metric: 'l2' });
    const rows = Array.from({ length: 30 }, (_, i) => Array.from({ length: dim }, () => i));
    await client.addIndexData('cli-auth', rows, rows.map((_, i) => `doc-${i}`));
    await client.syncTrain('cli-auth');
    await client.addBufferToIndex('cli-auth');

    await assert.rejects(IndexClient.connectTo(address, { secret: `${SECRET}x` }), (e: unknown) => e instanceof AuthError && /authentication failed/.test(e.message));
    await assert.rejects(IndexClient.connectTo(address), (e: unknown) => e instanceof AuthError && /requires a shared secret/.test(e.message));
    await waitForLog(server, /refused: authentication failed[^]*refused: server rank 0 requires a shared secret/);

    // Still serving: the first client and a new one.
    const r = await client.search('cli-auth', [Array.from({ length: dim }, () => 12.2)], 2);
    assert.deepEqual(r.metadata, [['doc-12', 'doc-13']]);
    const second = await IndexClient.connectTo(address, { secret: SECRET });
    assert.equal(await second.getNtotal('cli-auth'), 30);
    await Promise.all([client.close(), second.close()]);

    assert.match(server.stderr(), /"auth":true/);
    assert.ok(!server.stderr().includes(SECRET), 'the secret appears in the logs');
    assert.ok(!server.stderr().includes('chmod 600'), 'a 0600 file must not warn');
    assert.equal(await server.stop(), 0);
  });

  it('DFAISS_SECRET and --tls-key/--tls-cert: TLS plus authentication through the CLI', async () => {
    const server = await startServer(['--tls-key', pki.serverKey, '--tls-cert', pki.serverCert], { DFAISS_SECRET: SECRET });
    const address = [{ host: '127.0.0.1', port: server.port }];
    const client = await IndexClient.connectTo(address, { tls: { ca: pki.ca }, secret: SECRET });
    await client.createIndex('cli-tls', { indexBuilderType: 'flat', dim: 4, metric: 'dot' });
    await client.addIndexData('cli-tls', [[1, 0, 0, 0], [0, 1, 0, 0]], ['a', 'b']);
    await client.syncTrain('cli-tls');
    await client.addBufferToIndex('cli-tls');
    assert.deepEqual((await client.search('cli-tls', [[0, 2, 0, 0]], 1)).metadata, [['b']]);
    await client.close();
    await assert.rejects(IndexClient.connectTo(address, { tls: {}, secret: SECRET }), (e: unknown) => e instanceof AuthError && /does not trust/.test(e.message));
    await assert.rejects(IndexClient.connectTo(address, { secret: SECRET }), ConnectionError);
    assert.match(server.stderr(), /"auth":true,"tls":true/);
    assert.equal(await server.stop(), 0);
  });

  it('--tls-ca (mutual TLS): a client certificate from another CA fails on the client with a hint at the certificate (issue 12)', async () => {
    const server = await startServer(['--tls-key', pki.serverKey, '--tls-cert', pki.serverCert, '--tls-ca', pki.ca]);
    const address = [{ host: '127.0.0.1', port: server.port }];
    const good = await IndexClient.connectTo(address, { tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } });
    assert.equal(await good.getNtotal('none'), 0);
    await good.close();
    // Before: "connection ... lost while call 'hello' was pending (closed by the server)".
    await assert.rejects(IndexClient.connectTo(address, { tls: { ca: pki.ca, cert: pki.otherClientCert, key: pki.otherClientKey } }), (e: unknown) => {
      assert.ok(e instanceof AuthError, String(e));
      assert.match(e.message, /refused this client's certificate \(mutual TLS: tls\.cert must be signed by the CA the server was started with, --tls-ca/);
      return true;
    });
    assert.equal(await server.stop(), 0);
  });

  it('--max-frame-mb and --max-connections reach the server', async () => {
    const server = await startServer(['--max-frame-mb', '1', '--max-connections', '3']);
    const a = await RpcClient.connect('127.0.0.1', server.port);
    assert.equal(a.server.maxFrameBytes, 1024 * 1024);
    const b = await RpcClient.connect('127.0.0.1', server.port);
    const c = await RpcClient.connect('127.0.0.1', server.port);
    await assert.rejects(RpcClient.connect('127.0.0.1', server.port), (e: unknown) => e instanceof ConnectionError && /already serves 3 connections/.test(e.message));
    await Promise.all([a.close(), b.close(), c.close()]);
    assert.equal(await server.stop(), 0);
  });

  it('a readable-by-others secret file is used but warned about', async () => {
    const file = secretFile('loose-secret', SECRET, 0o644);
    const server = await startServer(['--secret-file', file]);
    await waitForLog(server, /mode 644: other users may read it; run chmod 600/);
    const client = await IndexClient.connectTo([{ host: '127.0.0.1', port: server.port }], { secret: SECRET });
    await client.close();
    assert.equal(await server.stop(), 0);
  });

  it('bad settings stop the server before it listens, with a message naming the problem', async () => {
    const cases: Array<{ args: string[]; message: RegExp }> = [
      { args: ['--secret-file', secretFile('short', 'tooshort\n')], message: /at least 16 bytes/ },
      { args: ['--secret-file', join(dir, 'does-not-exist')], message: /readable file holding the shared secret/ },
      { args: ['--tls-key', pki.serverKey], message: /--tls-key\/--tls-cert/ },
      { args: ['--max-frame-mb', '0'], message: /--max-frame-mb expects/ },
    ];
    for (const { args, message } of cases) {
      const { stderr, exited } = spawnServer(args);
      const code = await exited;
      assert.notEqual(code, 0, `${args.join(' ')} exited with 0`);
      assert.match(stderr(), message);
    }
  });
});
