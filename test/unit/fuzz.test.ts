// Frame decoder fuzz (issue 7): random and mutated valid frames, at least 100k cases,
// bounded in time. Only ProtocolError may escape the decoder or the stream assembler,
// and no case may hang. Then mutated frames over real sockets to a real `dfaiss server`
// process, which must still answer a valid client afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Packr } from 'msgpackr';
import { ProtocolError } from '../../src/errors.js';
import { IndexClient } from '../../src/index.js';
import {
  FrameAssembler,
  PROTOCOL_VERSION,
  decodeFrame,
  encodeFrame,
  type Attachment,
  type Envelope,
} from '../../src/protocol/index.js';
import { SyntheticDataset, prng } from '../../src/datasets/synthetic.js';
import { startCluster } from '../helpers/cluster.js';

const CASES = Number(process.env.DFAISS_FUZZ_CASES ?? 120_000);
const TIME_BUDGET_MS = 20_000;

function frameBytes(env: Envelope, att: Attachment[] = []): Uint8Array {
  const parts = encodeFrame(env, att).parts;
  return Uint8Array.prototype.slice.call(Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
}

/** A random plain value (what envelopes may carry), up to `depth` levels deep. */
function randomValue(rnd: () => number, depth: number): unknown {
  const r = rnd();
  if (depth <= 0 || r < 0.5) {
    const s = Math.floor(rnd() * 9);
    if (s === 0) return null;
    if (s === 1) return rnd() < 0.5;
    if (s === 2) return Math.floor(rnd() * 256) - 128;
    if (s === 3) return Math.floor(rnd() * 2 ** 32);
    if (s === 4) return (rnd() - 0.5) * 1e6;
    if (s === 5) return BigInt(Math.floor(rnd() * 2 ** 31)) * 2n ** 32n;
    if (s === 6) return 'x'.repeat(Math.floor(rnd() * 40));
    if (s === 7) return String.fromCharCode(...Array.from({ length: Math.floor(rnd() * 8) }, () => Math.floor(rnd() * 0xd000)));
    return '';
  }
  if (r < 0.75) return Array.from({ length: Math.floor(rnd() * 5) }, () => randomValue(rnd, depth - 1));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(rnd() * 5); i > 0; i--) o[`k${Math.floor(rnd() * 100)}`] = randomValue(rnd, depth - 1);
  return o;
}

function randomAttachments(rnd: () => number): Attachment[] {
  const att: Attachment[] = [];
  for (let j = Math.floor(rnd() * 4); j > 0; j--) {
    const n = Math.floor(rnd() * 40);
    const kind = Math.floor(rnd() * 4);
    att.push(kind === 0 ? new Float32Array(n).map(() => rnd()) : kind === 1 ? new BigInt64Array(n) : kind === 2 ? new Uint16Array(n) : new Uint8Array(n).map(() => rnd() * 256));
  }
  return att;
}

/** Valid frames of every shape: requests, ok replies, error replies, goodbyes, with attachments. */
function seedFrames(rnd: () => number, count: number): Uint8Array[] {
  const seeds: Uint8Array[] = [];
  const methods = ['hello', 'auth', 'search', 'addIndexData', 'createIndex', 'getInfo', 'status'];
  for (let i = 0; i < count; i++) {
    const kind = i % 4;
    const env: Envelope =
      kind === 0 || kind === 1
        ? { v: PROTOCOL_VERSION, id: 1 + Math.floor(rnd() * 1000), method: methods[i % methods.length]!, args: randomValue(rnd, 4) }
        : kind === 2
          ? { v: PROTOCOL_VERSION, id: Math.floor(rnd() * 1000), ok: true, result: randomValue(rnd, 4) }
          : { v: PROTOCOL_VERSION, id: i % 8 === 3 ? 0 : i, ok: false, error: { code: 'VALIDATION', message: 'bad', field: 'args.k', expected: 'an integer' } };
    seeds.push(frameBytes(env, randomAttachments(rnd)));
  }
  return seeds;
}

/** Envelopes that are valid msgpack but break the protocol's rules (built with a raw packer). */
function ruleBreakingEnvelopes(): Uint8Array[] {
  const packr = new Packr({ useRecords: false, variableMapSize: true });
  let deep: unknown = 1;
  for (let i = 0; i < 100; i++) deep = [deep];
  const envs: unknown[] = [
    { v: 1, id: 1 },
    { v: 1, id: 1, method: 'x', ok: true },
    { v: 'one', id: 1, method: 'x' },
    { v: 1, id: -1, method: 'x' },
    { v: 1, id: 2 ** 40, method: 'x' },
    { v: 1, id: 1, method: '' },
    { v: 1, id: 1, method: 'm'.repeat(200) },
    { v: 1, id: 1, method: 'x', args: deep },
    { v: 1, id: 1, method: 'x', att: 'nope' },
    { v: 1, id: 1, method: 'x', att: [['f32']] },
    { v: 1, id: 1, method: 'x', att: [['f32', -4]] },
    { v: 1, id: 1, method: 'x', att: [['constructor', 8]] },
    { v: 1, id: 1, method: 'x', att: [['__proto__', 8]] },
    { v: 1, id: 1, method: 'x', att: Array(5000).fill(['u8', 0]) },
    { v: 1, id: 1, ok: false, error: 'boom' },
    { v: 1, id: 1, ok: false, error: { code: 7 } },
    [1, 2, 3],
    'just a string',
    null,
    { v: 1, id: 1, method: 'x', args: new Date(0) },
    { v: 1, id: 1, method: 'x', args: new Uint8Array(4) },
    { v: 1, id: 1, method: 'x', args: new Float32Array(4) },
  ];
  return envs.map((e) => rawFrame(packr.pack(e)));
}

/** A frame with a correct header around any envelope bytes. */
function rawFrame(env: Uint8Array): Uint8Array {
  const total = Math.ceil((16 + env.length) / 8) * 8;
  const bytes = new Uint8Array(total);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, 0x49414644, true);
  dv.setUint32(4, total, true);
  dv.setUint32(8, env.length, true);
  bytes.set(env, 16);
  return bytes;
}

/** One mutation of a valid frame. */
function mutate(seed: Uint8Array, rnd: () => number, seeds: readonly Uint8Array[]): Uint8Array {
  let bytes = Uint8Array.from(seed);
  const op = Math.floor(rnd() * 10);
  const pick = () => (rnd() < 0.7 ? Math.floor(rnd() * Math.min(bytes.length, 96)) : Math.floor(rnd() * bytes.length));
  switch (op) {
    case 0: // bit flips
    case 1:
      for (let j = 1 + Math.floor(rnd() * 4); j > 0; j--) {
        const p = pick();
        bytes[p] = bytes[p]! ^ (1 << Math.floor(rnd() * 8));
      }
      break;
    case 2: // random bytes
      for (let j = 1 + Math.floor(rnd() * 4); j > 0; j--) bytes[pick()] = Math.floor(rnd() * 256);
      break;
    case 3: // interesting values at random positions
      for (let j = 1 + Math.floor(rnd() * 2); j > 0; j--) bytes[pick()] = [0x00, 0xff, 0x7f, 0x80, 0xc0, 0xc1, 0xd4, 0xc7, 0xdc, 0xde, 0xdf, 0xcf, 0xd3][Math.floor(rnd() * 13)]!;
      break;
    case 4: {
      // header fields: frame length, envelope length, reserved
      const dv = new DataView(bytes.buffer);
      const field = 4 + 4 * Math.floor(rnd() * 3);
      const cur = dv.getUint32(field, true);
      const choices = [cur + 8, cur - 8, cur + 1, 0, 16, 0xffffffff, 0xfffffff8, Math.floor(rnd() * 2 ** 32), cur * 2];
      dv.setUint32(field, choices[Math.floor(rnd() * choices.length)]! >>> 0, true);
      break;
    }
    case 5: // truncate
      bytes = bytes.subarray(0, Math.floor(rnd() * bytes.length));
      break;
    case 6: {
      // insert or delete a run inside the envelope region
      const at = 16 + Math.floor(rnd() * Math.max(1, Math.min(bytes.length - 16, 80)));
      const len = 1 + Math.floor(rnd() * 8);
      const out = new Uint8Array(bytes.length + (rnd() < 0.5 ? len : -Math.min(len, bytes.length - at)));
      if (out.length > bytes.length) {
        out.set(bytes.subarray(0, at));
        for (let j = 0; j < len; j++) out[at + j] = Math.floor(rnd() * 256);
        out.set(bytes.subarray(at), at + len);
      } else {
        out.set(bytes.subarray(0, at));
        out.set(bytes.subarray(at + (bytes.length - out.length)), at);
      }
      bytes = out;
      break;
    }
    case 7: {
      // splice: the header of one frame with the body of another
      const other = seeds[Math.floor(rnd() * seeds.length)]!;
      const out = Uint8Array.from(other);
      out.set(bytes.subarray(0, Math.min(16, out.length)));
      bytes = out;
      break;
    }
    case 8: {
      // consistent header, random envelope length inside the frame
      const dv = new DataView(bytes.buffer);
      dv.setUint32(8, 1 + Math.floor(rnd() * Math.max(1, bytes.length - 16)), true);
      break;
    }
    default: {
      // a mutation repeated in the attachment region
      for (let j = 1 + Math.floor(rnd() * 8); j > 0; j--) bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
    }
  }
  return bytes;
}

/** 1-3 random bytes changed after the header (envelope, padding, attachments): the frame stays framed. */
function mutateBody(seed: Uint8Array, rnd: () => number): Uint8Array {
  const bytes = Uint8Array.from(seed);
  for (let j = 1 + Math.floor(rnd() * 3); j > 0; j--) {
    const envEnd = 16 + new DataView(bytes.buffer).getUint32(8, true);
    const p = rnd() < 0.7 ? 16 + Math.floor(rnd() * (envEnd - 16)) : 16 + Math.floor(rnd() * (bytes.length - 16));
    bytes[p] = rnd() < 0.5 ? Math.floor(rnd() * 256) : bytes[p]! ^ (1 << Math.floor(rnd() * 8));
  }
  return bytes;
}

function randomFrame(rnd: () => number): Uint8Array {
  if (rnd() < 0.5) return Uint8Array.from({ length: Math.floor(rnd() * 80) }, () => Math.floor(rnd() * 256));
  // random bytes behind a plausible header
  const bytes = new Uint8Array(16 + Math.floor(rnd() * 40) * 8);
  for (let j = 16; j < bytes.length; j++) bytes[j] = Math.floor(rnd() * 256);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, 0x49414644, true);
  dv.setUint32(4, bytes.length, true);
  dv.setUint32(8, 1 + Math.floor(rnd() * (bytes.length - 16)), true);
  return bytes;
}

test(`frame decoder fuzz: ${CASES} random and mutated frames, only ProtocolError, no hangs, < ${TIME_BUDGET_MS / 1000} s`, () => {
  const rnd = prng(20240607);
  const seeds = [...seedFrames(rnd, 200), ...ruleBreakingEnvelopes()];
  let decoded = 0;
  let rejected = 0;
  let slowest = 0;
  const check = (bytes: Uint8Array): void => {
    const t = performance.now();
    try {
      decodeFrame(bytes, 1 << 20);
      decoded++;
    } catch (e) {
      if (!(e instanceof ProtocolError)) {
        throw new Error(`decodeFrame threw ${String(e)} (not a ProtocolError) for ${Buffer.from(bytes).toString('hex').slice(0, 400)}`);
      }
      rejected++;
    }
    slowest = Math.max(slowest, performance.now() - t);
  };
  // Every valid seed decodes; every rule-breaking one is refused.
  for (const s of seeds.slice(0, 200)) assert.doesNotThrow(() => decodeFrame(s, 1 << 20));
  for (const s of seeds.slice(200)) assert.throws(() => decodeFrame(s, 1 << 20), ProtocolError);
  // A "__proto__" key is plain data, never a prototype.
  const proto = decodeFrame(rawFrame(new Packr({ useRecords: false }).pack({ v: 1, id: 1, method: 'x', args: JSON.parse('{"__proto__": {"polluted": true}}') })));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.getPrototypeOf((proto.envelope as { args: object }).args)?.polluted, undefined);

  const t0 = Date.now();
  const streamCases = Math.floor(CASES / 20);
  for (let i = 0; i < CASES - streamCases; i++) {
    const seed = seeds[Math.floor(rnd() * seeds.length)]!;
    check(i % 8 === 0 ? randomFrame(rnd) : mutate(seed, rnd, seeds));
    if ((i & 1023) === 0) assert.ok(Date.now() - t0 < TIME_BUDGET_MS, `fuzz exceeded ${TIME_BUDGET_MS} ms after ${i} cases`);
  }
  // The streaming path: mutated streams in random chunks through the assembler.
  let streamRejected = 0;
  for (let i = 0; i < streamCases; i++) {
    const frames = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => seeds[Math.floor(rnd() * seeds.length)]!);
    const at = Math.floor(rnd() * frames.length);
    frames[at] = mutate(frames[at]!, rnd, seeds);
    const stream = Buffer.concat(frames);
    const asm = new FrameAssembler({ maxFrameBytes: 1 << 20, stagingBytes: 128 + Math.floor(rnd() * 512) }, (f) => {
      check(f.bytes);
      f.release();
    });
    try {
      for (let off = 0; off < stream.length; ) {
        const n = 1 + Math.floor(rnd() * 300);
        asm.push(stream.subarray(off, off + n));
        off += n;
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw new Error(`FrameAssembler threw ${String(e)} (not a ProtocolError)`);
      streamRejected++;
    } finally {
      asm.destroy();
    }
  }
  const ms = Date.now() - t0;
  console.log(`fuzz: ${CASES} cases in ${ms} ms: ${decoded} decoded, ${rejected} rejected, ${streamRejected} streams cut; slowest case ${slowest.toFixed(1)} ms`);
  assert.ok(decoded > 1000 && rejected > CASES / 3, `decoded ${decoded}, rejected ${rejected}`);
  assert.ok(ms < TIME_BUDGET_MS, `fuzz took ${ms} ms`);
  assert.ok(slowest < 1000, `one case took ${slowest} ms`);
});

test('mutated frames over real sockets never take a real server down', { timeout: 60_000 }, async () => {
  const dim = 8;
  const cluster = await startCluster(1, { serverArgs: ['--hello-timeout-ms', '1000', '--max-frame-mb', '4'] });
  const data = new SyntheticDataset({ dim, seed: 3 });
  try {
    const client = await IndexClient.connect(cluster.discovery);
    await client.createIndex('healthy', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    await client.addIndexData('healthy', data.base(200), Array.from({ length: 200 }, (_, i) => i), { trainAsync: false });
    await client.createIndex('fz', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    while ((await client.getNtotal('healthy')) < 200) await new Promise((r) => setTimeout(r, 10));

    const rnd = prng(777);
    const hello = frameBytes({ v: PROTOCOL_VERSION, id: 1, method: 'hello', args: { version: PROTOCOL_VERSION } });
    const nil = (n: number): [Uint8Array, Uint8Array] => [new Uint8Array(n).fill(0xc0), new Uint8Array(Uint32Array.from({ length: n + 1 }, (_, i) => i).buffer)];
    // Requests the healthy index can only be read by; writes go to 'fz' (a mutated 'fz' can't become 'healthy').
    const requests = (id: number): Uint8Array[] => [
      frameBytes({ v: 1, id, method: 'search', args: { indexId: 'healthy', k: 5 } }, [data.queries(2)]),
      frameBytes({ v: 1, id, method: 'search', args: { indexId: 'healthy', k: 3, returnEmbeddings: true } }, [data.queries(1)]),
      frameBytes({ v: 1, id, method: 'getNtotal', args: { indexId: 'healthy' } }),
      frameBytes({ v: 1, id, method: 'getInfo', args: { indexId: 'fz' } }),
      frameBytes({ v: 1, id, method: 'status', args: {} }),
      frameBytes({ v: 1, id, method: 'addIndexData', args: { indexId: 'fz', n: 3, key: `k${id}` } }, [data.base(3, id), ...nil(3)]),
      frameBytes({ v: 1, id, method: 'addIndexData', args: { indexId: 'fz', n: 2 } }, [new Uint16Array(2 * dim).fill(0x3c00), ...nil(2)]),
      frameBytes({ v: 1, id, method: 'createIndex', args: { indexId: 'fz', cfg: { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 } } }),
      frameBytes({ v: 1, id, method: 'setSearchParameter', args: { indexId: 'fz', name: 'nprobe', value: 2 } }),
    ];
    // msgpack of `id: 999` (0xa2 "id" 0xcd 0x03e7) as it appears in the reply envelope.
    const SENTINEL_ID = Buffer.from([0xa2, 0x69, 0x64, 0xcd, 0x03, 0xe7]);
    const CONNECTIONS = 1000;
    const FRAMES_PER_CONNECTION = 4;
    let sent = 0;
    let hangs = 0;
    const replies = { ok: 0, error: 0, goodbye: 0 };
    const session = async (c: number): Promise<void> => {
      const parts: Uint8Array[] = [c % 10 === 0 ? mutate(hello, rnd, [hello]) : hello];
      for (let f = 0; f < FRAMES_PER_CONNECTION; f++) {
        const reqs = requests(2 + f);
        const r = reqs[Math.floor(rnd() * reqs.length)]!;
        const m = rnd();
        parts.push(m < 0.25 ? mutate(r, rnd, reqs) : m < 0.85 ? mutateBody(r, rnd) : r);
        sent++;
      }
      // A valid request last: its reply (id 999) says the connection survived everything before it.
      parts.push(frameBytes({ v: 1, id: 999, method: 'getNtotal', args: { indexId: 'healthy' } }));
      const socket = net.connect({ port: cluster.servers[0]!.port, host: '127.0.0.1' });
      socket.on('error', (e) => { if (process.env.FUZZ_DEBUG) console.log('socket error', e.message); });
      const chunks: Buffer[] = [];
      let sentinel: () => void = () => {};
      const answered = new Promise<void>((resolve) => (sentinel = resolve));
      socket.on('data', (d: Buffer) => {
        chunks.push(d);
        if (Buffer.concat(chunks).includes(SENTINEL_ID)) sentinel();
      });
      const closed = new Promise<boolean>((resolve) => socket.on('close', () => resolve(true)));
      socket.write(Buffer.concat(parts));
      // Then FIN: a frame whose length field grew may still be waiting for bytes.
      await Promise.race([answered, closed, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
      socket.end();
      const ok = await Promise.race([closed, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10_000).unref())]);
      if (!ok) hangs++;
      socket.destroy();
      // What came back: replies (ok or error) and goodbyes (id 0) are all well-formed frames.
      const all = Buffer.concat(chunks);
      for (let off = 0; off + 16 <= all.length; ) {
        const len = all.readUInt32LE(off + 4);
        const env = decodeFrame(Uint8Array.prototype.slice.call(all, off, off + len)).envelope as { id: number; ok?: boolean };
        if (env.id === 0) replies.goodbye++;
        else if (env.ok) replies.ok++;
        else replies.error++;
        off += len;
      }
    };
    const t0 = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < CONNECTIONS) await session(next++);
      }),
    );
    console.log(`socket fuzz: ${sent} mutated/valid frames on ${CONNECTIONS} connections in ${Date.now() - t0} ms; replies: ${JSON.stringify(replies)}`);
    assert.ok(replies.ok > 800 && replies.error > 200 && replies.goodbye > 200, 'the fuzz reached the handlers, their validation and the framing checks');
    assert.equal(hangs, 0, 'every connection was closed by the server after the peer finished');
    assert.equal(cluster.servers[0]!.proc.exitCode, null, 'the server is still running');
    // A valid client still gets correct answers, and nothing acknowledged was lost.
    const after = await IndexClient.connect(cluster.discovery);
    assert.equal(await after.getNtotal('healthy'), 200);
    const r = await after.search('healthy', data.base(1, 17), 1);
    assert.deepEqual(r.metadata, [[17]]);
    await after.close();
    await client.close();
  } finally {
    await cluster.stop();
  }
});
