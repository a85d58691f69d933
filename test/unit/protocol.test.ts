/**
 * Wire protocol and transport: codec, frame assembly, TCP connections and RPC over real
 * loopback sockets (no mocks of node:net).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Packr } from 'msgpackr';
import { z } from 'zod';
import {
  ConnectionError,
  DfaissError,
  FaissError,
  IndexStateError,
  ProtocolError,
  RemoteError,
  StorageError,
  TimeoutError,
  UnknownIndexError,
  ValidationError,
} from '../../src/errors.js';
import {
  BufferPool,
  FrameAssembler,
  HEADER_BYTES,
  PROTOCOL_VERSION,
  RpcClient,
  RpcServer,
  TcpTransport,
  decodeFrame,
  defineMethod,
  encodeFrame,
  errorFromWire,
  errorToWire,
  parseHeader,
  type Attachment,
  type Connection,
  type Envelope,
  type MethodTable,
  type RawFrame,
  type RpcServerOptions,
  type WireError,
} from '../../src/protocol/index.js';

// ---------------------------------------------------------------- helpers

function concat(parts: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
}

function frameBytes(env: Envelope, att: Attachment[] = []): Uint8Array {
  return concat(encodeFrame(env, att).parts);
}

/** Returns `bytes` copied to an address with the given misalignment (mod 8). */
function misaligned(bytes: Uint8Array, shift: number): Uint8Array {
  const buf = new Uint8Array(bytes.byteLength + 8);
  buf.set(bytes, shift);
  return buf.subarray(shift, shift + bytes.byteLength);
}

const servers: RpcServer[] = [];
const clients: RpcClient[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.close()));
});

interface Reported {
  err: Error;
  remote: string;
  method?: string;
}

async function startServer(methods: MethodTable, opts: Partial<RpcServerOptions> = {}) {
  const errors: Reported[] = [];
  const server = new RpcServer({ methods, onError: (err, info) => errors.push({ err, ...info }), ...opts });
  servers.push(server);
  const { port } = await server.listen('127.0.0.1', 0);
  return { server, port, errors };
}

async function connect(port: number, opts: Parameters<typeof RpcClient.connect>[2] = {}) {
  const c = await RpcClient.connect('127.0.0.1', port, opts);
  clients.push(c);
  return c;
}

/** A raw TCP peer: collects everything the other side sends until it closes. */
function rawPeer(port: number): { socket: net.Socket; received: Promise<Buffer> } {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.on('error', () => {});
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const received = new Promise<Buffer>((resolve) => socket.on('close', () => resolve(Buffer.concat(chunks))));
  return { socket, received };
}

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(5);
  }
}

const echo = defineMethod({
  schema: z.object({ n: z.number().int() }).strict(),
  handler: (args, ctx) => ({ result: { n: args.n, id: ctx.requestId }, attachments: [...ctx.attachments] }),
});

const helloFrame = (version = PROTOCOL_VERSION) =>
  frameBytes({ v: version, id: 1, method: 'hello', args: { version } });

// ---------------------------------------------------------------- frames

describe('frame codec', () => {
  it('round-trips envelopes with attachments of every dtype as aligned zero-copy views', () => {
    const f32 = Float32Array.from([1.5, -2.25, Math.PI, Number.NaN, Infinity]);
    const i64 = BigInt64Array.from([0n, -1n, 2n ** 62n, -(2n ** 63n)]);
    const f16 = Uint16Array.from([0x3c00, 0xc000, 0x7bff]); // 6 bytes: needs padding
    const u8 = Uint8Array.from([1, 2, 3]); // 3 bytes: needs padding
    const empty = new Float32Array(0);
    const args = { indexId: 'idx', k: 10, nested: { list: [1, 'two', null, true, 2n ** 60n, 0.5] }, missing: undefined };
    const { parts, byteLength } = encodeFrame({ v: 1, id: 7, method: 'search', args }, [f32, i64, f16, u8, empty]);
    assert.equal(byteLength % 8, 0);
    assert.equal(byteLength, parts.reduce((n, p) => n + p.byteLength, 0));
    const bytes = concat(parts);
    assert.equal(bytes.byteOffset % 8, 0);
    const { envelope, attachments } = decodeFrame(bytes);
    assert.deepEqual(envelope, { v: 1, id: 7, method: 'search', args: { indexId: 'idx', k: 10, nested: args.nested } });
    assert.equal(attachments.length, 5);
    assert.ok(attachments[0] instanceof Float32Array);
    assert.ok(attachments[1] instanceof BigInt64Array);
    assert.ok(attachments[2] instanceof Uint16Array);
    assert.ok(attachments[3] instanceof Uint8Array);
    assert.deepEqual([...attachments[0]!], [...f32]);
    assert.deepEqual([...attachments[1]!], [...i64]);
    assert.deepEqual([...attachments[2]!], [...f16]);
    assert.deepEqual([...attachments[3]!], [...u8]);
    assert.equal(attachments[4]!.length, 0);
    for (const a of attachments) {
      assert.equal(a.buffer, bytes.buffer, 'attachment is a view of the frame, not a copy');
      assert.equal(a.byteOffset % 8, 0, 'attachment is 8-aligned');
    }
    // Writing through the view changes the frame bytes: proof of zero copy.
    (attachments[0] as Float32Array)[0] = 42;
    assert.equal(decodeFrame(bytes).attachments[0]![0], 42);
  });

  it('round-trips ok and error replies', () => {
    const ok = decodeFrame(frameBytes({ v: 1, id: 9, ok: true, result: ['a', { b: 1 }] })).envelope;
    assert.deepEqual(ok, { v: 1, id: 9, ok: true, result: ['a', { b: 1 }] });
    const wire = errorToWire(new ValidationError('args.k', 'an integer >= 1', 0));
    const bad = decodeFrame(frameBytes({ v: 1, id: 9, ok: false, error: wire })).envelope;
    assert.deepEqual(bad, { v: 1, id: 9, ok: false, error: wire });
  });

  it('uses one write for small frames and references big attachments without copying', () => {
    assert.equal(encodeFrame({ v: 1, id: 1, method: 'm' }, [new Float32Array(100)]).parts.length, 1);
    const big = new Float32Array(1 << 20);
    const { parts } = encodeFrame({ v: 1, id: 1, method: 'm' }, [big]);
    assert.ok(parts.some((p) => p.buffer === big.buffer), 'the big attachment is passed through as is');
  });

  it('copies a misaligned frame before viewing it', () => {
    const bytes = misaligned(frameBytes({ v: 1, id: 1, method: 'm' }, [Float32Array.from([1, 2])]), 3);
    const { attachments } = decodeFrame(bytes);
    assert.equal(attachments[0]!.byteOffset % 8, 0);
    assert.deepEqual([...attachments[0]!], [1, 2]);
  });

  it('refuses typed arrays and class instances inside args, and unsupported attachments', () => {
    assert.throws(() => encodeFrame({ v: 1, id: 1, method: 'm', args: { q: { v: new Float32Array(2) } } }), (e: unknown) => {
      assert.ok(e instanceof ValidationError);
      assert.equal(e.field, 'args.q.v');
      assert.match(e.message, /attachments/);
      return true;
    });
    assert.throws(() => encodeFrame({ v: 1, id: 1, method: 'm', args: [new Date()] }), /args\[0\]/);
    assert.throws(
      () => encodeFrame({ v: 1, id: 1, method: 'm' }, [new Int32Array(2) as unknown as Attachment]),
      (e: unknown) => e instanceof ValidationError && e.field === 'attachments[0]',
    );
  });

  it('rejects bad headers before allocating, with clear ProtocolErrors', () => {
    const good = frameBytes({ v: 1, id: 1, method: 'm' });
    const withField = (off: number, value: number) => {
      const b = Uint8Array.from(good);
      new DataView(b.buffer).setUint32(off, value, true);
      return b;
    };
    assert.throws(() => parseHeader(withField(0, 0x12345678), 0, 1 << 20), (e) => e instanceof ProtocolError && /magic/.test(e.message));
    assert.throws(() => parseHeader(withField(4, 0xfffffff0), 0, 1 << 20), (e) => e instanceof ProtocolError && /exceeds the limit/.test(e.message));
    assert.throws(() => parseHeader(withField(4, 13), 0, 1 << 20), (e) => e instanceof ProtocolError && /multiple of 8/.test(e.message));
    assert.throws(() => decodeFrame(withField(8, 1000)), ProtocolError);
    assert.throws(() => decodeFrame(withField(12, 1)), /reserved/);
    assert.throws(() => decodeFrame(good.subarray(0, good.byteLength - 8)), ProtocolError);
  });

  it('rejects envelopes that are not plain protocol maps', () => {
    const cases: unknown[] = [
      { v: 1, id: 1 }, // neither method nor ok
      { v: 1, id: 1, method: 'a', ok: true }, // both
      { v: 1, id: -1, method: 'a' },
      { v: 'x', id: 1, method: 'a' },
      { v: 1, id: 1, ok: false, error: 'nope' },
      { v: 1, id: 1, method: 'a', att: [['f64', 8]] },
      { v: 1, id: 1, method: 'a', att: [['f32', 6]] },
      { v: 1, id: 1, method: 'a', att: [['f32', 800]] }, // runs past the end
      [1, 2, 3],
      { v: 1, id: 1, method: 'a', args: new Set([1]) }, // msgpack extension
      { v: 1, id: 1, method: 'a', args: new Date() },
    ];
    for (const env of cases) {
      const body = packRaw(env);
      const total = Math.ceil((HEADER_BYTES + body.byteLength) / 8) * 8;
      const frame = new Uint8Array(total);
      const dv = new DataView(frame.buffer);
      dv.setUint32(0, 0x49414644, true);
      dv.setUint32(4, total, true);
      dv.setUint32(8, body.byteLength, true);
      frame.set(body, HEADER_BYTES);
      assert.throws(() => decodeFrame(frame), ProtocolError, JSON.stringify(env, (_k, v) => (typeof v === 'bigint' ? String(v) : v)));
    }
  });
});

// A packer that writes anything, extensions included, to build hostile envelopes.
const rawPackr = new Packr({ useRecords: false, moreTypes: true });
function packRaw(value: unknown): Uint8Array {
  return rawPackr.pack(value);
}

// ---------------------------------------------------------------- assembler

describe('frame assembler', () => {
  const collect = (opts: { maxFrameBytes?: number; stagingBytes?: number; pool?: BufferPool } = {}) => {
    const frames: RawFrame[] = [];
    const asm = new FrameAssembler({ maxFrameBytes: opts.maxFrameBytes ?? 1 << 26, stagingBytes: opts.stagingBytes, pool: opts.pool }, (f) =>
      frames.push(f),
    );
    return { asm, frames };
  };

  it('assembles a frame delivered one byte at a time', () => {
    const bytes = frameBytes({ v: 1, id: 5, method: 'm', args: { s: 'x'.repeat(100) } }, [Float32Array.from([1, 2, 3])]);
    const { asm, frames } = collect();
    for (let i = 0; i < bytes.byteLength; i++) {
      assert.equal(frames.length, 0);
      asm.push(bytes.subarray(i, i + 1));
    }
    assert.equal(frames.length, 1);
    const { envelope, attachments } = decodeFrame(frames[0]!.bytes);
    assert.equal(envelope.id, 5);
    assert.deepEqual([...attachments[0]!], [1, 2, 3]);
  });

  it('splits many frames arriving in one (misaligned) chunk, small and large mixed', () => {
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 200; i++) {
      const att = i % 50 === 7 ? [new Float32Array(40_000).fill(i)] : [Float32Array.from([i])];
      frames.push(frameBytes({ v: 1, id: i + 1, method: 'm' }, att));
    }
    const all = misaligned(concat(frames), 5);
    const { asm, frames: out } = collect();
    asm.push(all);
    assert.equal(out.length, 200);
    out.forEach((f, i) => {
      assert.equal(f.bytes.byteOffset % 8, 0);
      const { envelope, attachments } = decodeFrame(f.bytes);
      assert.equal(envelope.id, i + 1);
      assert.equal(attachments[0]!.buffer, f.bytes.buffer, 'views, not copies');
      assert.equal(attachments[0]![0], i);
    });
    // Random chunking gives the same result.
    const { asm: asm2, frames: out2 } = collect({ stagingBytes: 4096 });
    let off = 0;
    while (off < all.byteLength) {
      const n = 1 + Math.floor(Math.random() * 70_000);
      asm2.push(all.subarray(off, off + n));
      off += n;
    }
    assert.deepEqual(
      out2.map((f) => decodeFrame(f.bytes).envelope.id),
      frames.map((_, i) => i + 1),
    );
  });

  it('reuses a large-frame buffer only after release, so unreleased views stay intact', () => {
    const pool = new BufferPool({ maxBuffers: 2 });
    const { asm, frames } = collect({ pool });
    const f1 = frameBytes({ v: 1, id: 1, method: 'm' }, [new Float32Array(100_000).fill(1)]);
    const f2 = frameBytes({ v: 1, id: 2, method: 'm' }, [new Float32Array(100_000).fill(2)]);
    asm.push(f1);
    const held = decodeFrame(frames[0]!.bytes).attachments[0] as Float32Array;
    asm.push(f2); // frame 1 not released: frame 2 must get other memory
    assert.equal(pool.allocations, 2);
    assert.equal(held[99_999], 1, 'held view was not overwritten');
    assert.notEqual(frames[1]!.bytes.buffer, frames[0]!.bytes.buffer);
    frames[0]!.release();
    frames[0]!.release(); // idempotent
    asm.push(f2);
    assert.equal(pool.reuses, 1);
    assert.equal(frames[2]!.bytes.buffer, frames[0]!.bytes.buffer, 'released buffer reused');
  });

  it('frees what it drops (over capacity, released after destroy, idle at destroy) through the given allocator', () => {
    const freed: Uint8Array[] = [];
    const pool = new BufferPool({ maxBuffers: 1, granularity: 8, allocate: (n) => new Uint8Array(n), free: (b) => freed.push(b) });
    const a = pool.acquire(64);
    const b = pool.acquire(64);
    const c = pool.acquire(64);
    a.release(); // kept (1 idle)
    b.release(); // over maxBuffers: the oldest idle one (a) is freed
    assert.deepEqual(freed, [a.bytes]);
    pool.destroy(); // the idle one (b) is freed
    assert.deepEqual(freed, [a.bytes, b.bytes]);
    c.release(); // released after destroy: freed, not kept
    assert.deepEqual(freed, [a.bytes, b.bytes, c.bytes]);
  });

  it('pauses at a frame boundary and resumes where it stopped', () => {
    const bytes = concat([1, 2, 3, 4].map((id) => frameBytes({ v: 1, id, method: 'm' })));
    const ids: number[] = [];
    const asm: FrameAssembler = new FrameAssembler({ maxFrameBytes: 1 << 20 }, (f) => {
      ids.push(decodeFrame(f.bytes).envelope.id);
      if (ids.length === 2) asm.pause();
    });
    asm.push(bytes);
    assert.deepEqual(ids, [1, 2]);
    asm.push(frameBytes({ v: 1, id: 5, method: 'm' })); // queued while paused
    assert.deepEqual(ids, [1, 2]);
    asm.resume();
    assert.deepEqual(ids, [1, 2, 3, 4, 5]);
  });

  it('rejects an oversized length prefix without allocating and ignores input afterwards', () => {
    const pool = new BufferPool();
    const { asm, frames } = collect({ maxFrameBytes: 1024, pool });
    const big = frameBytes({ v: 1, id: 1, method: 'm' }, [new Uint8Array(4096)]);
    assert.throws(() => asm.push(big.subarray(0, 16)), /exceeds the limit of 1024/);
    assert.equal(pool.allocations, 0);
    asm.push(frameBytes({ v: 1, id: 2, method: 'm' }));
    assert.equal(frames.length, 0);
  });
});

// ---------------------------------------------------------------- errors on the wire

describe('errors on the wire', () => {
  it('rebuilds the matching class with its fields', () => {
    const cases: DfaissError[] = [
      new ValidationError('args.k', 'an integer >= 1', -3),
      new UnknownIndexError('books'),
      new FaissError('Error in faiss::IndexIVF::train'),
      new IndexStateError('not trained'),
      new ConnectionError('lost'),
      new ProtocolError('version'),
      new TimeoutError('slow'),
      new StorageError('disk full'),
      new RemoteError('other'),
      new DfaissError('generic'),
    ];
    for (const err of cases) {
      const back = errorFromWire(wireErrorOf(decodeFrame(frameBytes({ v: 1, id: 1, ok: false, error: errorToWire(err) })).envelope));
      assert.equal(back.constructor, err.constructor, err.constructor.name);
      assert.equal(back.code, err.code);
      assert.equal(back.message, err.message);
      assert.equal(back.name, err.name);
    }
    const v = errorFromWire(errorToWire(new ValidationError('args.k', 'an integer', 'x'))) as ValidationError;
    assert.equal(v.field, 'args.k');
    assert.equal(v.expected, 'an integer');
    assert.equal((errorFromWire(errorToWire(new UnknownIndexError('books'))) as UnknownIndexError).indexId, 'books');
  });

  it('maps unknown codes to RemoteError and hides non-dfaiss errors behind a clear message', () => {
    const r = errorFromWire({ code: 'SOMETHING_NEW', message: 'hi' });
    assert.ok(r instanceof RemoteError);
    assert.match(r.message, /SOMETHING_NEW.*hi/);
    assert.ok(errorFromWire({ code: 'constructor', message: 'x' }) instanceof RemoteError);
    const w = errorToWire(new TypeError('x is undefined'));
    assert.equal(w.code, 'REMOTE');
    assert.match(w.message, /internal server error: TypeError: x is undefined/);
  });
});

// ---------------------------------------------------------------- RPC over TCP

describe('rpc over tcp', () => {
  it('hello reports rank, version, capabilities and limits', async () => {
    const { port } = await startServer({ echo }, { rank: 4, capabilities: ['fp16'], maxFrameBytes: 1 << 20 });
    const c = await connect(port);
    assert.deepEqual(c.server, { version: PROTOCOL_VERSION, rank: 4, capabilities: ['fp16'], maxFrameBytes: 1 << 20 });
    assert.equal(c.remote, `127.0.0.1:${port}`);
  });

  it('calls with attachments of every dtype in both directions, zero-copy on receipt', async () => {
    const { port } = await startServer({ echo });
    const c = await connect(port);
    const big = new Float32Array(1 << 20).map((_, i) => i);
    const sent: Attachment[] = [big, BigInt64Array.from([1n, -2n]), Uint16Array.from([7, 8, 9]), Uint8Array.from([5])];
    const r = await c.call<{ n: number }>('echo', { n: 3 }, sent);
    assert.equal(r.result.n, 3);
    assert.equal(r.attachments.length, 4);
    r.attachments.forEach((a, i) => {
      assert.equal(a.constructor, sent[i]!.constructor);
      assert.deepEqual(a.length, sent[i]!.length);
      assert.equal(a.byteOffset % 8, 0);
    });
    assert.equal(r.attachments[0]![123_456], 123_456);
    assert.equal(r.attachments[0]!.buffer, r.attachments[3]!.buffer, 'all views share one receive buffer');
    r.release();
  });

  it('reuses request buffers after the reply unless the handler retains them', async () => {
    const kept: Float32Array[] = [];
    const seen: ArrayBufferLike[] = [];
    const { port } = await startServer({
      add: defineMethod({
        schema: z.object({ keep: z.boolean() }),
        attachments: ['f32'],
        handler: ({ keep }, ctx) => {
          const v = ctx.attachments[0] as Float32Array;
          seen.push(v.buffer);
          if (keep) {
            ctx.retainAttachments();
            kept.push(v); // e.g. buffered for a background add, no copy
          }
        },
      }),
    });
    const c = await connect(port);
    const batch = (x: number) => [new Float32Array(100_000).fill(x)];
    await c.call('add', { keep: false }, batch(1));
    await c.call('add', { keep: true }, batch(2));
    assert.equal(seen[1], seen[0], 'released buffer was reused');
    await c.call('add', { keep: false }, batch(3));
    await c.call('add', { keep: false }, batch(4));
    assert.notEqual(seen[2], seen[1], 'retained buffer is not handed out again');
    assert.equal(seen[3], seen[2]);
    assert.ok(kept[0]!.every((x) => x === 2), 'retained views still hold their data');
  });

  it('validates args with the schema and names the field', async () => {
    const { port } = await startServer({
      search: defineMethod({
        schema: z.object({ indexId: z.string().min(1), k: z.number().int().min(1).max(1024), opts: z.object({ nprobe: z.number().int() }) }),
        attachments: ['f32', 'i64?'],
        handler: () => ({ result: 'ok' }),
      }),
    });
    const c = await connect(port);
    const expectValidation = async (p: Promise<unknown>, field: string, expected: RegExp) => {
      await assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof ValidationError, String(e));
        assert.equal(e.field, field);
        assert.match(e.expected, expected);
        return true;
      });
    };
    const q = [new Float32Array(4)];
    await expectValidation(c.call('search', { indexId: 'a', k: 0, opts: { nprobe: 1 } }, q), 'args.k', /at least 1/);
    await expectValidation(c.call('search', { indexId: 'a', k: 'x', opts: { nprobe: 1 } }, q), 'args.k', /number/);
    await expectValidation(c.call('search', { indexId: 'a', k: 1, opts: { nprobe: 1.5 } }, q), 'args.opts.nprobe', /integer/);
    await expectValidation(c.call('search', { indexId: 'a', k: 1, opts: { nprobe: 1 } }), 'attachments', /f32/);
    await expectValidation(c.call('search', { indexId: 'a', k: 1, opts: { nprobe: 1 } }, [new Uint8Array(4)]), 'attachments[0]', /f32/);
    assert.equal((await c.call('search', { indexId: 'a', k: 1, opts: { nprobe: 1 } }, q)).result, 'ok');
  });

  it('answers unknown methods with an error and keeps the connection usable', async () => {
    const { port } = await startServer({ echo });
    const c = await connect(port);
    for (const m of ['nope', 'constructor', '__proto__', 'toString']) {
      await assert.rejects(c.call(m, {}), (e: unknown) => e instanceof ValidationError && e.field === 'method' && /echo/.test(e.expected));
    }
    // ids: 1 was hello, 2..5 the failed calls
    assert.deepEqual((await c.call('echo', { n: 1 })).result, { n: 1, id: 6 });
  });

  it('rebuilds handler errors as their own classes; non-dfaiss throws are reported', async () => {
    const { port, errors } = await startServer({
      missing: defineMethod({ schema: z.object({ id: z.string() }), handler: ({ id }) => Promise.reject(new UnknownIndexError(id)) }),
      buggy: defineMethod({
        schema: z.unknown(),
        handler: () => {
          throw new TypeError('oops');
        },
      }),
      badResult: defineMethod({ schema: z.unknown(), handler: () => ({ result: { m: new Map() } }) }),
    });
    const c = await connect(port);
    await assert.rejects(c.call('missing', { id: 'books' }), (e: unknown) => e instanceof UnknownIndexError && e.indexId === 'books');
    await assert.rejects(c.call('buggy'), (e: unknown) => e instanceof RemoteError && /oops/.test(e.message));
    await assert.rejects(c.call('badResult'), (e: unknown) => e instanceof ValidationError && e.field === 'result.m');
    assert.ok(errors.some((r) => r.method === 'buggy' && r.err instanceof TypeError));
    assert.equal((await c.call('echo2' as string).catch((e: Error) => e.constructor)), ValidationError);
  });

  it('runs 32 concurrent calls on one connection and matches replies by id', async () => {
    const { port } = await startServer({
      slow: defineMethod({
        schema: z.object({ n: z.number(), delay: z.number() }),
        handler: async ({ n, delay }, ctx) => {
          await sleep(delay);
          return { result: n * 10, attachments: [Float32Array.from([n, ctx.attachments.length])] };
        },
      }),
    });
    const c = await connect(port);
    const started = Date.now();
    const results = await Promise.all(
      Array.from({ length: 32 }, (_, n) => c.call<number>('slow', { n, delay: 20 + ((n * 37) % 60) }, [new Uint8Array(n)])),
    );
    assert.ok(Date.now() - started < 1500, 'calls ran concurrently');
    results.forEach((r, n) => {
      assert.equal(r.result, n * 10);
      assert.deepEqual([...r.attachments[0]!], [n, 1]);
    });
  });

  it('limits in-flight calls on the client (local queue) and on the server (stops reading)', async () => {
    let running = 0;
    let maxRunning = 0;
    const { port } = await startServer(
      {
        work: defineMethod({
          schema: z.unknown(),
          handler: async () => {
            maxRunning = Math.max(maxRunning, ++running);
            await sleep(10);
            running--;
          },
        }),
      },
      { maxInFlight: 3 },
    );
    const c = await connect(port, { maxInFlight: 8 });
    const calls = Array.from({ length: 20 }, () => c.call('work'));
    assert.equal(c.inFlight, 8);
    assert.equal(c.queued, 12);
    await Promise.all(calls);
    assert.equal(maxRunning, 3);
    assert.equal(c.inFlight + c.queued, 0);
  });

  it('times out a call with TimeoutError naming host:port and method; the connection stays usable', async () => {
    const { port } = await startServer({
      echo,
      hang: defineMethod({ schema: z.unknown(), handler: () => sleep(300).then(() => ({ result: 'late' })) }),
    });
    const c = await connect(port);
    const t0 = Date.now();
    await assert.rejects(c.call('hang', {}, [], { timeoutMs: 50 }), (e: unknown) => {
      assert.ok(e instanceof TimeoutError);
      assert.match(e.message, new RegExp(`'hang'.*127\\.0\\.0\\.1:${port}.*50 ms`));
      return true;
    });
    assert.ok(Date.now() - t0 < 250);
    assert.equal(c.inFlight, 0);
    assert.equal((await c.call<{ n: number }>('echo', { n: 2 })).result.n, 2);
    await sleep(300); // the late reply arrives and is dropped quietly
    assert.equal((await c.call<{ n: number }>('echo', { n: 3 })).result.n, 3);
    const ac = new AbortController();
    const p = c.call('hang', {}, [], { signal: ac.signal });
    ac.abort(new DfaissError('caller gave up'));
    await assert.rejects(p, /caller gave up/);
  });

  it('a call that times out while its request is still being written drops the connection', async () => {
    const { server, port, errors } = await startServer(
      {
        hang: defineMethod({ schema: z.unknown(), handler: () => sleep(400) }),
      },
      // The first call fills the only slot, so the server stops reading this connection
      // (and, not reading, notices the client's close only once the slot frees up).
      { maxInFlight: 1 },
    );
    const c = await connect(port);
    const first = assert.rejects(c.call('hang'), (e: unknown) => e instanceof ConnectionError && /still being sent/.test(e.message));
    await sleep(20);
    const big = new Float32Array(16 << 20); // 64 MiB: far more than the socket buffers hold
    await assert.rejects(c.call('hang', {}, [big], { timeoutMs: 200 }), TimeoutError);
    // The half-sent frame can no longer be completed with whatever the caller writes into `big` now.
    await first;
    await waitFor(() => c.closed && server.connectionCount === 0);
    // The server saw a truncated frame and dropped it.
    assert.ok(errors.some((r) => r.err instanceof ProtocolError && /middle of a frame/.test(r.err.message)), errors.map((r) => r.err.message).join());
  });

  it('rejects pending calls with ConnectionError naming the server when the server shuts down', async () => {
    let aborted = 0;
    const { server, port } = await startServer({
      hang: defineMethod({
        schema: z.unknown(),
        // The handler learns through ctx.signal that nobody waits for its reply any more.
        handler: (_args, ctx) => sleep(5000, undefined, { signal: ctx.signal }).catch(() => void aborted++),
      }),
    });
    const c = await connect(port);
    const pending = [c.call('hang'), c.call('hang')];
    await waitFor(() => server.connectionCount === 1);
    await sleep(20);
    const t0 = Date.now();
    await server.close();
    for (const p of pending) {
      await assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof ConnectionError, String(e));
        assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}.*'hang'.*shutting down`));
        return true;
      });
    }
    assert.ok(Date.now() - t0 < 1000);
    assert.ok(c.closed);
    await assert.rejects(c.call('hang'), ConnectionError);
    await waitFor(() => aborted === 2);
  });

  it('rejects pending calls with ConnectionError when the server socket dies abruptly', async () => {
    let conn: Connection | undefined;
    const transport = new TcpTransport();
    const listener = await transport.listen('127.0.0.1', 0, (cn) => {
      conn = cn;
      cn.onFrame((f) => {
        const env = f.envelope;
        if ('method' in env && env.method === 'hello') {
          const result = { version: PROTOCOL_VERSION, rank: 0, capabilities: [], maxFrameBytes: 1 << 20 };
          void cn.send(encodeFrame({ v: PROTOCOL_VERSION, id: env.id, ok: true, result }).parts);
        }
      });
    });
    const c = await connect(listener.port);
    const p = c.call('anything');
    await sleep(20);
    (conn as unknown as { destroy(): void }).destroy();
    await assert.rejects(p, (e: unknown) => e instanceof ConnectionError && e.message.includes(`127.0.0.1:${listener.port}`));
    await listener.close();
  });

  it('graceful close lets running calls finish first', async () => {
    const { server, port } = await startServer({ work: defineMethod({ schema: z.unknown(), handler: () => sleep(100).then(() => ({ result: 'done' })) }) });
    const c = await connect(port);
    const p = c.call('work');
    await sleep(20);
    await server.close({ graceMs: 2000 });
    assert.equal((await p).result, 'done');
  });

  it('refuses a request bigger than the server limit before sending it', async () => {
    const { port } = await startServer({ echo }, { maxFrameBytes: 64 * 1024 });
    const c = await connect(port);
    await assert.rejects(c.call('echo', { n: 1 }, [new Float32Array(20_000)]), (e: unknown) => e instanceof ValidationError && /65536/.test(e.message));
    assert.equal((await c.call<{ n: number }>('echo', { n: 1 }, [new Float32Array(1000)])).result.n, 1);
  });

  it('keeps replies within the client limit (error reply instead of an oversized frame)', async () => {
    const { port } = await startServer({
      big: defineMethod({ schema: z.unknown(), handler: () => ({ attachments: [new Float32Array(100_000)] }) }),
    });
    const c = await connect(port, { maxFrameBytes: 64 * 1024 });
    await assert.rejects(c.call('big'), (e: unknown) => e instanceof ProtocolError && /client's limit of 65536/.test(e.message));
  });

  it('two connections to one server are independent: a search does not queue behind bulk data', async () => {
    const { port } = await startServer({
      add: defineMethod({ schema: z.unknown(), attachments: ['f32'], handler: () => sleep(200).then(() => ({ result: 'added' })) }),
      search: defineMethod({ schema: z.unknown(), handler: () => ({ result: 'found' }) }),
    }, { maxInFlight: 1 });
    const bulk = await connect(port);
    const fast = await connect(port);
    const adds = [bulk.call('add', {}, [new Float32Array(4 << 20)]), bulk.call('add', {}, [new Float32Array(4 << 20)])];
    await sleep(30);
    const t0 = Date.now();
    assert.equal((await fast.call('search')).result, 'found');
    assert.ok(Date.now() - t0 < 150, 'search answered while the bulk connection was busy');
    await Promise.all(adds);
  });
});

// ---------------------------------------------------------------- hostile and broken peers

describe('misbehaving peers', () => {
  it('version mismatch is a ProtocolError on the server and on the client (old client)', async () => {
    const { port, errors } = await startServer({ echo });
    await assert.rejects(RpcClient.connect('127.0.0.1', port, { protocolVersion: 99 }), (e: unknown) => {
      assert.ok(e instanceof ProtocolError, String(e));
      assert.match(e.message, /version 99.*version 1/);
      return true;
    });
    await waitFor(() => errors.length > 0);
    assert.ok(errors[0]!.err instanceof ProtocolError);
    assert.match(errors[0]!.err.message, /speaks protocol version 99/);
  });

  it('version mismatch is a ProtocolError on the client (old server that does not check)', async () => {
    const transport = new TcpTransport();
    const listener = await transport.listen('127.0.0.1', 0, (cn) => {
      cn.onFrame((f) => {
        const result = { version: 2, rank: 0, capabilities: [], maxFrameBytes: 1 << 20 };
        void cn.send(encodeFrame({ v: 2, id: f.envelope.id, ok: true, result }).parts).catch(() => {});
      });
    });
    await assert.rejects(RpcClient.connect('127.0.0.1', listener.port), (e: unknown) => {
      assert.ok(e instanceof ProtocolError);
      assert.match(e.message, new RegExp(`server 127\\.0\\.0\\.1:${listener.port} speaks protocol version 2 but this client speaks version 1`));
      return true;
    });
    await listener.close();
  });

  it('closes a connection whose length prefix is over the limit, with a goodbye naming the problem', async () => {
    const { server, port, errors } = await startServer({ echo }, { maxFrameBytes: 1 << 20 });
    const { socket, received } = rawPeer(port);
    socket.write(helloFrame());
    await sleep(30);
    const header = Buffer.alloc(16);
    header.writeUInt32LE(0x49414644, 0);
    header.writeUInt32LE(0xfffffff0, 4); // ~4 GiB claimed
    header.writeUInt32LE(16, 8);
    socket.write(header);
    const bytes = await received;
    // hello reply, then the goodbye frame (id 0) with the reason.
    const goodbye = lastFrame(bytes);
    assert.equal(goodbye.envelope.id, 0);
    assert.ok('ok' in goodbye.envelope && !goodbye.envelope.ok);
    const err = errorFromWire(wireErrorOf(goodbye.envelope));
    assert.ok(err instanceof ProtocolError);
    assert.match(err.message, /4294967280 bytes exceeds the limit of 1048576/);
    await waitFor(() => errors.length > 0);
    assert.ok(errors[0]!.err instanceof ProtocolError);
    await waitFor(() => server.connectionCount === 0);
    // Other clients are unaffected.
    assert.equal((await (await connect(port)).call<{ n: number }>('echo', { n: 1 })).result.n, 1);
  });

  it('before hello only small frames are accepted', async () => {
    const { port, errors } = await startServer({ echo });
    const { socket, received } = rawPeer(port);
    socket.write(frameBytes({ v: 1, id: 1, method: 'hello', args: { version: 1 } }, [new Uint8Array(1 << 20)]));
    await received;
    await waitFor(() => errors.length > 0);
    assert.match(errors[0]!.err.message, /exceeds the limit of 65536/);
  });

  it('survives garbage bytes: the connection is closed, the server keeps serving', async () => {
    const { server, port, errors } = await startServer({ echo });
    const { socket, received } = rawPeer(port);
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const bytes = await received;
    assert.match(errorFromWire(wireErrorOf(lastFrame(bytes).envelope)).message, /magic/);
    await waitFor(() => errors.length > 0 && server.connectionCount === 0);
    assert.ok(errors[0]!.err instanceof ProtocolError);
    assert.equal((await (await connect(port)).call<{ n: number }>('echo', { n: 9 })).result.n, 9);
  });

  it('a truncated frame followed by close is reported, not hung on', async () => {
    const { server, port, errors } = await startServer({ echo });
    const { socket, received } = rawPeer(port);
    const f = helloFrame();
    socket.end(f.subarray(0, f.byteLength - 5));
    await received;
    await waitFor(() => errors.length > 0 && server.connectionCount === 0);
    assert.ok(errors[0]!.err instanceof ProtocolError);
    assert.match(errors[0]!.err.message, /middle of a frame/);
  });

  it('a request before hello, a reply from a client, or a duplicate id close the connection', async () => {
    const { port, errors } = await startServer({ echo: defineMethod({ schema: z.unknown(), handler: () => sleep(100) }) });
    const tries: Uint8Array[] = [
      frameBytes({ v: 1, id: 1, method: 'echo' }),
      concat([helloFrame(), frameBytes({ v: 1, id: 3, ok: true })]),
      concat([helloFrame(), frameBytes({ v: 1, id: 2, method: 'echo' }), frameBytes({ v: 1, id: 2, method: 'echo' })]),
    ];
    for (const bytes of tries) {
      const { socket, received } = rawPeer(port);
      socket.write(bytes);
      await received;
    }
    await waitFor(() => errors.length >= 3);
    assert.match(errors.map((e) => e.err.message).join('\n'), /first request must be 'hello'[^]*only send requests[^]*already in flight/);
  });

  it('disconnects a client that never sends hello', async () => {
    const { server, port, errors } = await startServer({ echo }, { helloTimeoutMs: 150 });
    const t0 = Date.now();
    const { received } = rawPeer(port);
    await waitFor(() => server.connectionCount === 1);
    const bytes = await received;
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 140 && elapsed < 1500, `closed after ${elapsed} ms`);
    assert.match(errorFromWire(wireErrorOf(lastFrame(bytes).envelope)).message, /no hello within 150 ms/);
    assert.ok(errors[0]!.err instanceof ProtocolError);
    await waitFor(() => server.connectionCount === 0);
  });

  it('closes a connection that stalls mid-frame after the handshake; slow progress and idle connections are kept', async () => {
    const { server, port, errors } = await startServer({ echo }, { frameTimeoutMs: 200 });
    const idle = await connect(port); // like a pooled client connection between calls
    const request = frameBytes({ v: PROTOCOL_VERSION, id: 2, method: 'echo', args: { n: 7 } }, [new Float32Array(256)]);

    // Half a frame, then silence: closed with a goodbye once the deadline passes.
    const stalled = rawPeer(port);
    stalled.socket.write(helloFrame());
    await sleep(30);
    const t0 = Date.now();
    stalled.socket.write(request.subarray(0, request.byteLength >> 1));
    const bytes = await Promise.race([
      stalled.received,
      sleep(3000).then(() => {
        stalled.socket.destroy();
        throw new Error('the stalled connection was not closed within 3 s');
      }),
    ]);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 190 && elapsed < 2000, `closed after ${elapsed} ms`);
    const reason = errorFromWire(wireErrorOf(lastFrame(bytes).envelope));
    assert.ok(reason instanceof ProtocolError);
    assert.match(reason.message, new RegExp(`sent ${request.byteLength >> 1} of ${request.byteLength} bytes of a frame and then nothing for 200 ms`));
    await waitFor(() => errors.some((e) => /and then nothing for 200 ms/.test(e.err.message)), 2000);

    // The same frame in pieces 120 ms apart (longer than the deadline in all): each piece is progress.
    const slow = net.connect({ port, host: '127.0.0.1' });
    slow.on('error', () => {});
    const got: Buffer[] = [];
    let slowClosed = false;
    slow.on('data', (c: Buffer) => got.push(c));
    slow.on('close', () => (slowClosed = true));
    slow.write(helloFrame());
    const step = Math.ceil(request.byteLength / 4);
    for (let off = 0; off < request.byteLength; off += step) {
      await sleep(120);
      slow.write(request.subarray(off, off + step));
    }
    await waitFor(() => {
      const b = Buffer.concat(got);
      return b.length > 0 && lastFrame(b).envelope.id === 2;
    }, 2000);
    const reply = lastFrame(Buffer.concat(got));
    assert.ok('ok' in reply.envelope && reply.envelope.ok);
    assert.equal(slowClosed, false, 'a peer making progress is not cut off');
    slow.destroy();

    // The idle connection outlived several deadlines and still works.
    assert.equal(idle.closed, false);
    assert.equal((await idle.call<{ n: number }>('echo', { n: 5 })).result.n, 5);
    await waitFor(() => server.connectionCount === 1);
  });

    it('a client connecting to nothing gets ConnectionError; to a silent server TimeoutError', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const freePort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    await assert.rejects(RpcClient.connect('127.0.0.1', freePort), (e: unknown) => e instanceof ConnectionError && e.message.includes(`127.0.0.1:${freePort}`));
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    await assert.rejects(RpcClient.connect('127.0.0.1', port, { connectTimeoutMs: 100 }), (e: unknown) => e instanceof TimeoutError && /'hello'/.test(e.message));
    silent.close();
  });

  it('fuzz: 20k random and mutated frames never throw anything but ProtocolError and never hang', () => {
    const rnd = mulberry32(12345);
    const seeds: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) {
      const att: Attachment[] = [];
      for (let j = 0; j < (i % 4); j++) {
        const n = Math.floor(rnd() * 40);
        att.push([new Float32Array(n), new BigInt64Array(n), new Uint16Array(n), new Uint8Array(n)][j % 4]!);
      }
      const env: Envelope =
        i % 3 === 0
          ? { v: 1, id: i + 1, method: `m${i}`, args: { a: i, s: 'x'.repeat(i), l: [1, [2, [3]]], o: { p: null } } }
          : i % 3 === 1
            ? { v: 1, id: i, ok: true, result: { r: [i, 'y'] } }
            : { v: 1, id: i, ok: false, error: { code: 'VALIDATION', message: 'm', field: 'f' } };
      seeds.push(frameBytes(env, att));
    }
    let decoded = 0;
    let rejected = 0;
    const check = (bytes: Uint8Array) => {
      try {
        decodeFrame(bytes, 1 << 20);
        decoded++;
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw new Error(`non-ProtocolError ${String(e)} for ${Buffer.from(bytes).toString('hex').slice(0, 200)}`);
        rejected++;
      }
    };
    const t0 = Date.now();
    for (let i = 0; i < 20_000; i++) {
      const seed = seeds[i % seeds.length]!;
      let bytes: Uint8Array;
      const kind = i % 5;
      if (kind === 0) {
        // random bytes behind a plausible header
        bytes = new Uint8Array(16 + Math.floor(rnd() * 30) * 8);
        for (let j = 16; j < bytes.length; j++) bytes[j] = Math.floor(rnd() * 256);
        const dv = new DataView(bytes.buffer);
        dv.setUint32(0, 0x49414644, true);
        dv.setUint32(4, bytes.length, true);
        dv.setUint32(8, 1 + Math.floor(rnd() * (bytes.length - 16)), true);
      } else if (kind === 1) {
        bytes = new Uint8Array(Math.floor(rnd() * 64));
        for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rnd() * 256);
      } else {
        bytes = Uint8Array.from(seed);
        const flips = 1 + Math.floor(rnd() * 4);
        for (let j = 0; j < flips; j++) {
          // bias mutations toward header and envelope, where the structure is
          const pos = rnd() < 0.8 ? Math.floor(rnd() * Math.min(bytes.length, 80)) : Math.floor(rnd() * bytes.length);
          bytes[pos] = kind === 2 ? Math.floor(rnd() * 256) : bytes[pos]! ^ (1 << Math.floor(rnd() * 8));
        }
        if (kind === 4 && rnd() < 0.5) bytes = bytes.subarray(0, Math.floor(rnd() * bytes.length));
      }
      check(bytes);
    }
    // The streaming path too: random chunking of a mutated stream.
    for (let i = 0; i < 300; i++) {
      const stream = concat(seeds.slice(0, 1 + (i % 10)));
      const at = Math.floor(rnd() * stream.length);
      stream[at] = stream[at]! ^ 0xff;
      const asm = new FrameAssembler({ maxFrameBytes: 1 << 20, stagingBytes: 256 }, (f) => check(f.bytes));
      let off = 0;
      try {
        while (off < stream.length) {
          const n = 1 + Math.floor(rnd() * 200);
          asm.push(stream.subarray(off, off + n));
          off += n;
        }
      } catch (e) {
        assert.ok(e instanceof ProtocolError, String(e));
      }
    }
    const ms = Date.now() - t0;
    assert.ok(decoded > 0 && rejected > 10_000, `decoded ${decoded}, rejected ${rejected}`);
    assert.ok(ms < 8000, `fuzz took ${ms} ms`);
  });

  it('fuzz over sockets: mutated streams never take the server down', async () => {
    const { port } = await startServer({ echo }, { helloTimeoutMs: 500 });
    const rnd = mulberry32(99);
    const good = concat([helloFrame(), frameBytes({ v: 1, id: 2, method: 'echo', args: { n: 1 } }, [new Float32Array(50)])]);
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        const bytes = Uint8Array.from(good);
        for (let j = 0; j < 3; j++) bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
        const { socket, received } = rawPeer(port);
        socket.end(bytes);
        await received;
      }),
    );
    assert.equal((await (await connect(port)).call<{ n: number }>('echo', { n: 5 })).result.n, 5);
  });
});

function lastFrame(bytes: Buffer) {
  let off = 0;
  let last: ReturnType<typeof decodeFrame> | undefined;
  while (off + 16 <= bytes.length) {
    const len = bytes.readUInt32LE(off + 4);
    last = decodeFrame(Uint8Array.prototype.slice.call(bytes, off, off + len));
    off += len;
  }
  if (!last) throw new Error('no frame received');
  return last;
}

function wireErrorOf(env: Envelope): WireError {
  if ('ok' in env && !env.ok) return env.error;
  throw new Error(`not an error reply: ${JSON.stringify(env)}`);
}

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
