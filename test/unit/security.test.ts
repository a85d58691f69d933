/**
 * Security options: shared-secret authentication (challenge-response in the handshake),
 * TLS, and connection limits. Real sockets on loopback, real IndexServer/IndexClient for
 * the end-to-end cases; a throwaway CA made with openssl for TLS.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { AuthError, ConnectionError, IndexClient, IndexServer, ValidationError, readSecretFile } from '../../src/index.js';
import {
  RpcClient,
  RpcServer,
  TcpTransport,
  clientProof,
  decodeFrame,
  defineMethod,
  encodeFrame,
  errorFromWire,
  serverProof,
  type Envelope,
  type RpcServerOptions,
  type WireError,
} from '../../src/protocol/index.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

const SECRET = 'c0ffee-d00d-5ec2e7-0123456789abcdef';
const echo = defineMethod({ schema: z.unknown(), handler: (args) => ({ result: args }) });

const cleanup: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

interface Reported {
  err: Error;
  remote: string;
}

async function startRpc(opts: Partial<RpcServerOptions> = {}) {
  const errors: Reported[] = [];
  const server = new RpcServer({ methods: { echo }, onError: (err, info) => errors.push({ err, remote: info.remote }), ...opts });
  cleanup.push(() => server.close());
  const { port } = await server.listen('127.0.0.1', 0);
  return { server, port, errors };
}

async function waitFor(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(5);
  }
}

/** A raw socket to `port`; resolves with everything the server sent once it closes. */
function rawPeer(port: number): { socket: net.Socket; received: Promise<Buffer> } {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  const received = new Promise<Buffer>((resolve) => {
    socket.on('data', (d) => chunks.push(d));
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    socket.on('error', () => {});
  });
  return { socket, received };
}

function frameBytes(env: Envelope): Buffer {
  return Buffer.concat(encodeFrame(env).parts);
}

/** Splits a byte stream into decoded envelopes. */
function envelopes(bytes: Buffer): Envelope[] {
  const out: Envelope[] = [];
  let off = 0;
  while (off + 16 <= bytes.byteLength) {
    const len = bytes.readUInt32LE(off + 4);
    if (off + len > bytes.byteLength) break;
    const copy = new Uint8Array(len);
    copy.set(bytes.subarray(off, off + len));
    out.push(decodeFrame(copy).envelope);
    off += len;
  }
  return out;
}

function wireError(env: Envelope | undefined): WireError {
  assert.ok(env && 'ok' in env && env.ok === false, `expected an error reply, got ${JSON.stringify(env)}`);
  return (env as { error: WireError }).error;
}

/**
 * A TCP proxy on loopback that records every byte in both directions, to check what an
 * eavesdropper on the network would see.
 */
async function recordingProxy(targetPort: number): Promise<{ port: number; bytes: () => Buffer; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(targetPort, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    inbound.on('data', (d) => {
      chunks.push(Buffer.from(d));
      outbound.write(d);
    });
    outbound.on('data', (d) => {
      chunks.push(Buffer.from(d));
      inbound.write(d);
    });
    inbound.on('end', () => outbound.end());
    outbound.on('end', () => inbound.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    bytes: () => Buffer.concat(chunks),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** The secret in every form a careless implementation might send it. */
function secretForms(secret: string): Buffer[] {
  const b = Buffer.from(secret);
  return [b, Buffer.from(b.toString('hex')), Buffer.from(b.toString('base64')), b.subarray(0, 12)];
}

// ---------------------------------------------------------------- primitives

describe('auth primitives', () => {
  it('proofs match the test vector in docs/protocol.md (an independent HMAC implementation agrees)', () => {
    const secret = Buffer.from('0123456789abcdef0123456789abcdef');
    const sN = '11'.repeat(32);
    const cN = '22'.repeat(32);
    assert.equal(clientProof(secret, sN, cN, 1), '4cc1167fc447b2f05e0d3375644e16c0dbe4829f91b8e598979b677be71a2d5f');
    assert.equal(serverProof(secret, cN, sN, 1), '496cc6015925be804cc6a02d4c8e0268f38c5af7874be925d030f7b5e8a65609');
    // Reflection: with equal nonces the client's proof is still not a valid server proof.
    assert.notEqual(clientProof(secret, cN, cN, 1), serverProof(secret, cN, cN, 1));
    // The version is bound in.
    assert.notEqual(clientProof(secret, sN, cN, 1), clientProof(secret, sN, cN, 2));
  });

  it('secrets: at least 16 bytes; secret files lose their trailing newline and warn when others may read them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dfaiss-secret-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    assert.throws(() => new RpcServer({ methods: {}, auth: { secret: 'short' } }), (e: unknown) => e instanceof ValidationError && /at least 16 bytes/.test(e.message));
    await assert.rejects(RpcClient.connect('127.0.0.1', 1, { secret: 'short' }), (e: unknown) => e instanceof ValidationError);
    const file = join(dir, 'secret');
    writeFileSync(file, `${SECRET}\r\n`);
    chmodSync(file, 0o644);
    const warnings: string[] = [];
    assert.equal(readSecretFile(file, (m) => warnings.push(m)).toString(), SECRET);
    assert.match(warnings[0] ?? '', /mode 644.*chmod 600/);
    chmodSync(file, 0o600);
    warnings.length = 0;
    readSecretFile(file, (m) => warnings.push(m));
    assert.deepEqual(warnings, []);
    assert.throws(() => readSecretFile(join(dir, 'missing')), (e: unknown) => e instanceof ValidationError && /missing/.test(e.message));
    writeFileSync(file, 'tiny\n');
    assert.throws(() => readSecretFile(file), (e: unknown) => e instanceof ValidationError && /at least 16 bytes/.test(e.message));
  });
});

// ---------------------------------------------------------------- shared secret

describe('shared-secret authentication', () => {
  it('a client with the right secret connects and calls; the server logs nothing', async () => {
    const { port, errors, server } = await startRpc({ auth: { secret: SECRET } });
    assert.equal(server.requiresAuth, true);
    const c = await RpcClient.connect('127.0.0.1', port, { secret: SECRET });
    assert.deepEqual((await c.call('echo', { a: 1 })).result, { a: 1 });
    // Bytes are fine too.
    const c2 = await RpcClient.connect('127.0.0.1', port, { secret: Buffer.from(SECRET) });
    assert.deepEqual((await c2.call('echo', [2])).result, [2]);
    await Promise.all([c.close(), c2.close()]);
    assert.deepEqual(errors.map((e) => e.err.message), []);
  });

  it('wrong secret: AuthError on the client, the server logs it, closes only that connection and keeps serving', async () => {
    const { port, errors, server } = await startRpc({ auth: { secret: SECRET } });
    const good = await RpcClient.connect('127.0.0.1', port, { secret: SECRET });
    await assert.rejects(RpcClient.connect('127.0.0.1', port, { secret: `${SECRET}-wrong` }), (e: unknown) => {
      assert.ok(e instanceof AuthError, String(e));
      assert.equal(e.code, 'AUTH');
      assert.match(e.message, new RegExp(`server 127\\.0\\.0\\.1:${port} refused this client: authentication failed.*same secret`));
      return true;
    });
    await waitFor(() => errors.length === 1 && server.connectionCount === 1);
    assert.ok(errors[0]!.err instanceof AuthError);
    assert.match(errors[0]!.err.message, /client 127\.0\.0\.1:\d+ refused: authentication failed/);
    // The connected client and new good clients are unaffected.
    assert.deepEqual((await good.call('echo', 'still here')).result, 'still here');
    const again = await RpcClient.connect('127.0.0.1', port, { secret: SECRET });
    assert.deepEqual((await again.call('echo', 3)).result, 3);
    await Promise.all([good.close(), again.close()]);
  });

  it('missing secret: AuthError saying how to pass one; the server logs it', async () => {
    const { port, errors } = await startRpc({ auth: { secret: SECRET } });
    await assert.rejects(RpcClient.connect('127.0.0.1', port), (e: unknown) => {
      assert.ok(e instanceof AuthError, String(e));
      assert.match(e.message, /requires a shared secret.*pass \{ secret \}.*--secret-file \/ DFAISS_SECRET/);
      return true;
    });
    await waitFor(() => errors.length === 1);
    assert.match(errors[0]!.err.message, /sent no credentials/);
  });

  it('a client with a secret refuses a server that runs without one', async () => {
    const { port } = await startRpc();
    await assert.rejects(RpcClient.connect('127.0.0.1', port, { secret: SECRET }), (e: unknown) => {
      assert.ok(e instanceof AuthError, String(e));
      assert.match(e.message, /did not ask this client to authenticate/);
      return true;
    });
  });

  for (const mode of ['random proof', 'reflected client proof'] as const) {
    it(`a fake server that does not know the secret is detected (${mode})`, async () => {
      // Speaks the protocol, asks for authentication, but cannot compute the server proof.
      const transport = new TcpTransport();
      let clientNonce = '';
      let authArgs: { proof: string } | undefined;
      const listener = await transport.listen('127.0.0.1', 0, (conn) => {
        conn.onFrame((f) => {
          const env = f.envelope as { id: number; method: string; args: { nonce?: string; proof?: string } };
          f.release();
          let result: unknown;
          if (env.method === 'hello') {
            clientNonce = env.args.nonce ?? '';
            // Reflection attempt: the same nonce as the client's.
            const nonce = mode === 'reflected client proof' ? clientNonce : 'ab'.repeat(32);
            result = { version: 1, rank: 0, capabilities: [], maxFrameBytes: 1 << 20, auth: { scheme: 'hmac-sha256', nonce } };
          } else {
            authArgs = env.args as { proof: string };
            result = { proof: mode === 'reflected client proof' ? authArgs.proof : 'cd'.repeat(32) };
          }
          void conn.send(encodeFrame({ v: 1, id: env.id, ok: true, result }).parts).catch(() => {});
        });
      });
      cleanup.push(() => listener.close());
      await assert.rejects(RpcClient.connect('127.0.0.1', listener.port, { secret: SECRET }), (e: unknown) => {
        assert.ok(e instanceof AuthError, String(e));
        assert.match(e.message, /could not prove that it knows the shared secret/);
        return true;
      });
      assert.match(clientNonce, /^[0-9a-f]{64}$/);
      assert.ok(authArgs && !authArgs.proof.includes(Buffer.from(SECRET).toString('hex')));
    });
  }

  it('the secret never crosses the wire (recorded by a TCP proxy), with a successful and a failed handshake', async () => {
    const { port } = await startRpc({ auth: { secret: SECRET } });
    const proxy = await recordingProxy(port);
    cleanup.push(() => proxy.close());
    const c = await RpcClient.connect('127.0.0.1', proxy.port, { secret: SECRET });
    await c.call('echo', { hello: 'world' });
    await c.close();
    const other = 'an-entirely-different-secret-42';
    await assert.rejects(RpcClient.connect('127.0.0.1', proxy.port, { secret: other }), AuthError);
    await sleep(50);
    const bytes = proxy.bytes();
    assert.ok(bytes.includes(Buffer.from('world')), 'the proxy saw the traffic');
    assert.ok(bytes.includes(Buffer.from('proof')), 'the proxy saw the handshake');
    for (const form of [...secretForms(SECRET), ...secretForms(other)]) {
      assert.equal(bytes.indexOf(form), -1, `found ${JSON.stringify(form.toString())} on the wire`);
    }
  });

  it('before authenticating a client can do nothing: requests close the connection with an AUTH goodbye; frames stay small', async () => {
    const { port, errors } = await startRpc({ auth: { secret: SECRET } });
    const hello = frameBytes({ v: 1, id: 1, method: 'hello', args: { version: 1, nonce: '00'.repeat(32) } });
    // A method call instead of auth.
    const a = rawPeer(port);
    a.socket.write(Buffer.concat([hello, frameBytes({ v: 1, id: 2, method: 'echo', args: 1 })]));
    const envsA = envelopes(await a.received);
    assert.ok((envsA[0] as { result: { auth: { nonce: string } } }).result.auth.nonce.match(/^[0-9a-f]{64}$/));
    const goodbye = envsA.at(-1)!;
    assert.equal(goodbye.id, 0);
    const err = errorFromWire(wireError(goodbye));
    assert.ok(err instanceof AuthError);
    assert.match(err.message, /sent 'echo' before authenticating/);
    // A large frame after the challenge: still the 64 KiB pre-handshake limit.
    const b = rawPeer(port);
    b.socket.write(Buffer.concat([hello, Buffer.concat(encodeFrame({ v: 1, id: 2, method: 'auth', args: {} }, [new Uint8Array(100_000)]).parts)]));
    assert.match(errorFromWire(wireError(envelopes(await b.received).at(-1))).message, /exceeds the limit of 65536/);
    // A malformed proof is a failed authentication.
    const c = rawPeer(port);
    c.socket.write(Buffer.concat([hello, frameBytes({ v: 1, id: 2, method: 'auth', args: { proof: 'nope' } })]));
    const errC = errorFromWire(wireError(envelopes(await c.received).at(-1)));
    assert.ok(errC instanceof AuthError && /authentication failed/.test(errC.message));
    await waitFor(() => errors.length >= 3);
  });

  it('a client that stops after the challenge is dropped after helloTimeoutMs', async () => {
    const { port, errors, server } = await startRpc({ auth: { secret: SECRET }, helloTimeoutMs: 150 });
    const p = rawPeer(port);
    p.socket.write(frameBytes({ v: 1, id: 1, method: 'hello', args: { version: 1, nonce: '00'.repeat(32) } }));
    const t0 = Date.now();
    const envs = envelopes(await p.received);
    assert.ok(Date.now() - t0 < 2000);
    assert.match(errorFromWire(wireError(envs.at(-1))).message, /no auth within 150 ms/);
    await waitFor(() => errors.length === 1 && server.connectionCount === 0);
  });

  it("'auth' and 'hello' are reserved: not callable, not definable", async () => {
    assert.throws(() => new RpcServer({ methods: { auth: echo } }), /reserved for the handshake/);
    const { port } = await startRpc({ auth: { secret: SECRET } });
    const c = await RpcClient.connect('127.0.0.1', port, { secret: SECRET });
    await assert.rejects(c.call('auth', { proof: '00'.repeat(32) }), ValidationError);
    await c.close();
  });
});

// ---------------------------------------------------------------- limits

describe('connection limits', () => {
  it('maxConnections: one connection too many gets a goodbye saying why; the slot frees up on close', async () => {
    const { port, errors } = await startRpc({ maxConnections: 2 });
    const a = await RpcClient.connect('127.0.0.1', port);
    const b = await RpcClient.connect('127.0.0.1', port);
    await assert.rejects(RpcClient.connect('127.0.0.1', port), (e: unknown) => {
      assert.ok(e instanceof ConnectionError, String(e));
      assert.match(e.message, /already serves 2 connections.*--max-connections/);
      return true;
    });
    assert.match(errors[0]!.err.message, /already serves 2 connections/);
    await a.close();
    await sleep(20);
    const c = await RpcClient.connect('127.0.0.1', port);
    assert.equal((await c.call('echo', 1)).result, 1);
    await Promise.all([b.close(), c.close()]);
  });

  it('IndexServer passes limits through: maxFrameBytes is announced and enforced, maxConnections applies', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dfaiss-limits-'));
    const server = new IndexServer(0, dir, { maxFrameBytes: 64 * 1024, maxConnections: 2, helloTimeoutMs: 5000, maxInFlight: 4 });
    const { port } = await server.start();
    cleanup.push(async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const client = await IndexClient.connectTo([{ host: '127.0.0.1', port }]); // 2 connections
    await client.createIndex('lim', { indexBuilderType: 'flat', dim: 64, metric: 'l2' });
    // 300 x 64 floats = 76.8 KB: over the server's 64 KiB frame limit.
    await assert.rejects(client.addIndexData('lim', new Float32Array(300 * 64)), (e: unknown) => e instanceof ValidationError && /65536/.test(e.message));
    await client.addIndexData('lim', new Float32Array(100 * 64));
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }]), (e: unknown) => e instanceof ConnectionError && /already serves 2/.test(e.message));
    await client.close();
  });
});

// ---------------------------------------------------------------- TLS

describe('TLS', () => {
  let pki: TestPki;
  let dir: string;
  before(() => {
    pki = makeTestPki();
    dir = mkdtempSync(join(tmpdir(), 'dfaiss-tls-'));
  });
  after(() => {
    pki.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startIndexServer(opts: ConstructorParameters<typeof IndexServer>[2]) {
    const server = new IndexServer(0, join(dir, `s${cleanup.length}`), opts);
    const { port } = await server.start();
    cleanup.push(() => server.stop());
    return { server, port };
  }

  async function roundTrip(client: IndexClient, indexId: string): Promise<void> {
    const dim = 8;
    await client.createIndex(indexId, { indexBuilderType: 'flat', dim, metric: 'l2' });
    const rows = Array.from({ length: 20 }, (_, i) => Array.from({ length: dim }, () => i));
    await client.addIndexData(indexId, rows, rows.map((_, i) => ({ doc: i })));
    await client.syncTrain(indexId);
    await client.addBufferToIndex(indexId);
    const r = await client.search(indexId, [Array.from({ length: dim }, () => 7.1)], 2);
    assert.deepEqual(r.metadata, [[{ doc: 7 }, { doc: 8 }]]);
  }

  it('IndexServer with tls + IndexClient with the CA: search works', async () => {
    const { port } = await startIndexServer({ tls: { key: pki.serverKey, cert: pki.serverCert } });
    const client = await IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls: { ca: pki.ca } });
    await roundTrip(client, 'tls-docs');
    await client.close();
    // Host names are checked too: 'localhost' is in the certificate.
    const byName = await IndexClient.connectTo([{ host: 'localhost', port }], { tls: { ca: pki.ca } });
    assert.equal(await byName.getNtotal('tls-docs'), 20);
    await byName.close();
  });

  it('a client without the CA (or with another CA, or a wrong name) fails with a clear AuthError', async () => {
    const { port } = await startIndexServer({ tls: { key: pki.serverKey, cert: pki.serverCert } });
    for (const tls of [{}, { ca: pki.otherCa }]) {
      await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls }), (e: unknown) => {
        assert.ok(e instanceof AuthError, String(e));
        assert.match(e.message, /does not trust.*pass the CA certificate that signed it as tls\.ca/);
        return true;
      });
    }
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls: { ca: pki.ca, servername: 'example.com' } }), (e: unknown) => {
      assert.ok(e instanceof AuthError, String(e));
      assert.match(e.message, /does not name the host.*tls\.servername/);
      return true;
    });
  });

  it('plain client to a TLS server, and TLS client to a plain server: errors that name the mismatch', async () => {
    const { port: tlsPort } = await startIndexServer({ tls: { key: pki.serverKey, cert: pki.serverCert } });
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port: tlsPort }]), (e: unknown) => {
      assert.ok(e instanceof ConnectionError, String(e));
      assert.match(e.message, /if that server uses TLS, connect with tls options/);
      return true;
    });
    const errors: Error[] = [];
    const plain = await startRpc({ onError: (err) => errors.push(err) });
    await assert.rejects(RpcClient.connect('127.0.0.1', plain.port, { tls: { ca: pki.ca } }), (e: unknown) => {
      assert.ok(e instanceof ConnectionError, String(e));
      assert.match(e.message, /is the server running without TLS/);
      return true;
    });
    await waitFor(() => errors.length > 0);
    assert.match(errors[0]!.message, /the peer speaks TLS but this side does not/);
  });

  it('client certificates: with tls.ca on the server, only clients presenting a certificate it signed get in', async () => {
    const { port } = await startIndexServer({ tls: { key: pki.serverKey, cert: pki.serverCert, ca: pki.ca } });
    const client = await IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } });
    assert.equal(await client.getNtotal('none'), 0);
    await client.close();
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls: { ca: pki.ca } }), (e: unknown) => {
      assert.ok(e instanceof AuthError, String(e));
      assert.match(e.message, /requires a client certificate/);
      return true;
    });
  });

  it('TLS and a shared secret together; wrong secret over TLS is still an AuthError', async () => {
    const { port } = await startIndexServer({ tls: { key: pki.serverKey, cert: pki.serverCert }, auth: { secret: SECRET } });
    const client = await IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls: { ca: pki.ca }, secret: SECRET });
    await roundTrip(client, 'tls-auth');
    await client.close();
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls: { ca: pki.ca }, secret: `${SECRET}!` }), AuthError);
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }], { tls: { ca: pki.ca } }), AuthError);
  });

  it('bad certificate options fail at construction, naming the option', () => {
    assert.throws(() => new IndexServer(0, dir, { tls: { key: join(dir, 'nope.key'), cert: pki.serverCert } }), (e: unknown) => e instanceof ValidationError && /tls\.key/.test(e.message));
    // Key of another certificate.
    assert.throws(() => new IndexServer(0, dir, { tls: { key: pki.clientKey, cert: pki.serverCert } }), (e: unknown) => e instanceof ValidationError && /matching/.test(e.message));
  });
});

describe('IndexClient with a shared secret', () => {
  it('secret and secretFile options; wrong secret rejects connectTo with AuthError', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dfaiss-auth-'));
    const server = new IndexServer(0, join(dir, 'data'), { auth: { secret: SECRET } });
    const { port } = await server.start();
    cleanup.push(async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const file = join(dir, 'secret');
    writeFileSync(file, `${SECRET}\n`, { mode: 0o600 });
    const a = await IndexClient.connectTo([{ host: '127.0.0.1', port }], { secretFile: file });
    const b = await IndexClient.connectTo([{ host: '127.0.0.1', port }], { secret: SECRET });
    await a.createIndex('x', { indexBuilderType: 'flat', dim: 4, metric: 'l2' });
    assert.equal(await b.getNtotal('x'), 0);
    await Promise.all([a.close(), b.close()]);
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }], { secret: 'x'.repeat(32) }), AuthError);
    await assert.rejects(IndexClient.connectTo([{ host: '127.0.0.1', port }]), AuthError);
  });
});
