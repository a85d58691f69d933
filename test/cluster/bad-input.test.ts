// The bad-input catalogue (issue 7): every entry against real `dfaiss server` processes,
// through IndexClient and, where the client refuses before sending, through a raw RpcClient
// or a raw socket so the server's own checks run too. For each: a typed error naming the
// field, the servers keep serving, and nothing acknowledged is lost.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import {
  IndexClient,
  IndexStateError,
  ProtocolError,
  UnknownIndexError,
  ValidationError,
} from '../../src/index.js';
import { DfaissError } from '../../src/errors.js';
import { PROTOCOL_VERSION, RpcClient, decodeFrame, encodeFrame, type Attachment, type Envelope } from '../../src/protocol/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 8;
const ROWS = 50;
const BATCHES = 4;
const HEALTHY = 'healthy';
const HELLO_TIMEOUT_MS = 1500;
/** Above the hello deadline, so pre-hello stalls still meet the hello deadline first. */
const FRAME_TIMEOUT_MS = 2500;
const data = new SyntheticDataset({ dim, seed: 77 });

let cluster: TestCluster;
let client: IndexClient;
/** Raw RPC connections to each server: requests the client would refuse still reach them. */
let raw: RpcClient[];
let probe: Float32Array;

before(async () => {
  cluster = await startCluster(2, { serverArgs: ['--max-frame-mb', '1', '--hello-timeout-ms', String(HELLO_TIMEOUT_MS), '--frame-timeout-ms', String(FRAME_TIMEOUT_MS)] });
  client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 20_000 });
  raw = await Promise.all(cluster.servers.map((s) => RpcClient.connect('127.0.0.1', s.port)));
  await client.createIndex(HEALTHY, { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
  for (let b = 0; b < BATCHES; b++) {
    await client.addIndexData(HEALTHY, data.base(ROWS, b * ROWS), Array.from({ length: ROWS }, (_, i) => ({ row: b * ROWS + i })), { trainAsync: false });
  }
  const end = Date.now() + 10_000;
  while ((await client.getNtotal(HEALTHY)) < ROWS * BATCHES && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  probe = data.base(1, 123);
});

after(async () => {
  await Promise.allSettled(raw?.map((r) => r.close()) ?? []);
  await client?.close();
  await cluster?.stop();
});

/** The servers still run and answer, and the healthy index still has every acknowledged vector. */
async function stillServing(): Promise<void> {
  for (const s of cluster.servers) assert.equal(s.proc.exitCode, null, `server ${s.rank} is still running`);
  assert.equal(await client.getNtotal(HEALTHY), ROWS * BATCHES, 'ntotal of the healthy index unchanged');
  const r = await client.search(HEALTHY, probe, 1);
  assert.deepEqual(r.metadata[0], [{ row: 123 }], 'a vector is still its own nearest neighbour');
  // Fresh connections are accepted too (the raw ones may have been closed by a test).
  const fresh = await RpcClient.connect('127.0.0.1', cluster.servers[0]!.port);
  assert.equal((await fresh.call<number>('getNtotal', { indexId: HEALTHY })).result > 0, true);
  await fresh.close();
}

/** Asserts `p` rejects with an instance of `cls` (and, for ValidationError, the named field). */
async function rejectsWith(p: Promise<unknown>, cls: new (...a: never[]) => DfaissError, field?: string | RegExp, message?: RegExp): Promise<DfaissError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `expected ${cls.name}, but the call succeeded`);
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${String(caught)}`);
  if (field !== undefined) {
    assert.ok(caught instanceof ValidationError, `expected a ValidationError, got ${String(caught)}`);
    if (typeof field === 'string') assert.equal(caught.field, field, caught.message);
    else assert.match(caught.field, field, caught.message);
    assert.ok(caught.expected.length > 0);
  }
  if (message) assert.match((caught as Error).message, message);
  return caught as DfaissError;
}

/** Metadata attachments for n vectors without metadata (msgpack nil each). */
function nilMeta(n: number): [Uint8Array, Uint8Array] {
  const offsets = Uint32Array.from({ length: n + 1 }, (_, i) => i);
  return [new Uint8Array(n).fill(0xc0), new Uint8Array(offsets.buffer)];
}

function offsetsOf(...o: number[]): Uint8Array {
  return new Uint8Array(Uint32Array.from(o).buffer);
}

const rawAdd = (r: RpcClient, indexId: string, n: number, atts: Attachment[]) => r.call('addIndexData', { indexId, n }, atts);

describe('vectors and queries', () => {
  it('wrong vector dimension', async () => {
    await rejectsWith(client.addIndexData(HEALTHY, new Float32Array(dim + 2)), ValidationError, 'vectors', /dim=8/);
    await rejectsWith(client.addIndexData(HEALTHY, [Array(dim).fill(0), Array(dim - 1).fill(0)]), ValidationError, /^vectors/);
    await rejectsWith(client.search(HEALTHY, new Float32Array(dim - 1), 1), ValidationError, 'queries');
    // The server checks too: n x dim must match what arrived.
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 2, [new Float32Array(2 * dim - 2), ...nilMeta(2)]), ValidationError, 'vectors', /2 x dim=8/);
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 1, [new Uint16Array(dim + 1), ...nilMeta(1)]), ValidationError, 'vectors');
    await rejectsWith(raw[0]!.call('search', { indexId: HEALTHY, k: 1 }, [new Float32Array(dim + 3)]), ValidationError, 'queries');
    await stillServing();
  });

  it('NaN or Infinity in vectors or queries', async () => {
    const bad = (v: number) => Float32Array.from({ length: dim }, (_, i) => (i === 3 ? v : 0.5));
    await rejectsWith(client.addIndexData(HEALTHY, bad(Number.NaN)), ValidationError, 'vectors[0][3]', /finite/);
    await rejectsWith(client.addIndexData(HEALTHY, [[...bad(Infinity)]]), ValidationError, 'vectors[0][3]');
    await rejectsWith(client.search(HEALTHY, bad(-Infinity), 1), ValidationError, 'queries[0][3]');
    await rejectsWith(client.searchWithFilter(HEALTHY, bad(Number.NaN), 1, { where: () => true }), ValidationError, 'queries[0][3]');
    await rejectsWith(rawAdd(raw[1]!, HEALTHY, 1, [bad(Number.NaN), ...nilMeta(1)]), ValidationError, 'vectors[0][3]');
    await rejectsWith(rawAdd(raw[1]!, HEALTHY, 1, [bad(Infinity), ...nilMeta(1)]), ValidationError, 'vectors[0][3]');
    // float16 NaN (0x7e00) and +Infinity (0x7c00) are caught in float16 (it waits as it arrived).
    await rejectsWith(rawAdd(raw[1]!, HEALTHY, 1, [Uint16Array.from({ length: dim }, (_, i) => (i === 2 ? 0x7e00 : 0x3c00)), ...nilMeta(1)]), ValidationError, 'vectors[0][2]');
    await rejectsWith(rawAdd(raw[1]!, HEALTHY, 1, [Uint16Array.from({ length: dim }, (_, i) => (i === 2 ? 0x7c00 : 0x3c00)), ...nilMeta(1)]), ValidationError, 'vectors[0][2]');
    await rejectsWith(raw[1]!.call('search', { indexId: HEALTHY, k: 1 }, [bad(Infinity)]), ValidationError, 'queries[0][3]');
    await stillServing();
  });

  it('empty batch', async () => {
    await rejectsWith(client.addIndexData(HEALTHY, new Float32Array(0)), ValidationError, 'vectors', /at least one vector/);
    await rejectsWith(client.addIndexData(HEALTHY, []), ValidationError, 'vectors');
    await rejectsWith(client.addIndexData(HEALTHY, new Uint16Array(0)), ValidationError, 'vectors');
    await rejectsWith(client.search(HEALTHY, new Float32Array(0), 1), ValidationError, 'queries');
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 0, [new Float32Array(0), new Uint8Array(0), offsetsOf(0)]), ValidationError, 'args.n');
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 1, [new Float32Array(0), ...nilMeta(1)]), ValidationError, 'vectors');
    await rejectsWith(raw[0]!.call('search', { indexId: HEALTHY, k: 1 }, [new Float32Array(0)]), ValidationError, 'queries');
    await stillServing();
  });
});

describe('metadata', () => {
  it('metadata length != batch size', async () => {
    await rejectsWith(client.addIndexData(HEALTHY, data.base(3, 0), [1, 2]), ValidationError, 'metadata', /one entry per vector \(3\)/);
    await rejectsWith(client.addIndexData(HEALTHY, data.base(1, 0), [1, 2]), ValidationError, 'metadata');
    // Server: n+1 offsets required, and they must span the blob.
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 2, [data.base(2, 0), new Uint8Array([0xc0]), offsetsOf(0, 1)]), ValidationError, 'metadata', /batch size/);
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 1, [data.base(1, 0), new Uint8Array([0xc0, 0xc0]), offsetsOf(0, 1, 2)]), ValidationError, 'metadata');
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 1, [data.base(1, 0), new Uint8Array([0xc0, 0xc0]), offsetsOf(0, 1)]), ValidationError, 'metadata', /blob length 2/);
    // Missing metadata attachments altogether.
    await rejectsWith(rawAdd(raw[0]!, HEALTHY, 1, [data.base(1, 0)]), ValidationError, 'metadata');
    await stillServing();
  });

  it('metadata that cannot be serialised: client side', async () => {
    class Doc {
      title = 'x';
    }
    await rejectsWith(client.addIndexData(HEALTHY, data.base(2, 0), [1, () => 2]), ValidationError, 'metadata[1]', /plain data/);
    await rejectsWith(client.addIndexData(HEALTHY, data.base(1, 0), [new Doc()]), ValidationError, 'metadata[0]', /Doc/);
    await rejectsWith(client.addIndexData(HEALTHY, data.base(1, 0), [{ ids: new BigInt64Array(2) }]), ValidationError, /^metadata\[0\]/, /typed arrays/);
    await rejectsWith(client.addIndexData(HEALTHY, data.base(1, 0), [Symbol('s')]), ValidationError, 'metadata[0]');
    await rejectsWith(client.addIndexData(HEALTHY, data.base(1, 0), [new Map([[1, 2]])]), ValidationError, 'metadata[0]');
    await stillServing();
  });

  it('metadata that cannot be serialised: garbage bytes in the blob (server side)', async () => {
    const v = data.base(2, 0);
    // 0xc1 is never used in msgpack; 0xd4 is a fixext (extension types are refused); 0xdb wants 4 more length bytes.
    for (const [blob, offsets] of [
      [new Uint8Array([0xc0, 0xc1, 0xff, 0x00]), offsetsOf(0, 1, 4)],
      [new Uint8Array([0xc0, 0xd4, 0x01, 0x00]), offsetsOf(0, 1, 4)],
      [new Uint8Array([0xc0, 0xdb, 0xff]), offsetsOf(0, 1, 3)],
      [new Uint8Array([0x01, 0x02, 0x03]), offsetsOf(0, 2, 3)], // two values in item 0
    ] as const) {
      await rejectsWith(rawAdd(raw[1]!, HEALTHY, 2, [v, blob, offsets]), ValidationError, /^metadata\[[01]\]$/);
    }
    // Decreasing or out-of-range offsets.
    await rejectsWith(rawAdd(raw[1]!, HEALTHY, 2, [v, new Uint8Array([0xc0, 0xc0]), offsetsOf(0, 0, 2)]), ValidationError, 'metadata[0]');
    await rejectsWith(rawAdd(raw[1]!, HEALTHY, 2, [v, new Uint8Array([0xc0, 0xc0]), offsetsOf(0, 5, 2)]), ValidationError, /^metadata/);
    // Offsets that are not whole u32s.
    await rejectsWith(rawAdd(raw[1]!, HEALTHY, 2, [v, new Uint8Array([0xc0, 0xc0]), new Uint8Array(11)]), ValidationError, 'metadata offsets');
    await stillServing();
  });
});

describe('indexes and configurations', () => {
  it('unknown index id', async () => {
    const e = await rejectsWith(client.search('no-such-index', probe, 1), UnknownIndexError);
    assert.equal((e as UnknownIndexError).indexId, 'no-such-index');
    await rejectsWith(client.addIndexData('no-such-index', probe), UnknownIndexError);
    await rejectsWith(client.syncTrain('no-such-index'), UnknownIndexError);
    await rejectsWith(client.getState('no-such-index'), UnknownIndexError);
    await rejectsWith(client.saveIndex('no-such-index'), UnknownIndexError);
    await rejectsWith(client.dropIndex('no-such-index'), UnknownIndexError);
    await rejectsWith(client.loadIndex('no-such-index'), UnknownIndexError);
    await rejectsWith(raw[0]!.call('search', { indexId: 'no-such-index', k: 1 }, [probe]), UnknownIndexError);
    await rejectsWith(rawAdd(raw[0]!, 'no-such-index', 1, [probe, ...nilMeta(1)]), UnknownIndexError);
    assert.equal(await client.getNtotal('no-such-index'), 0, 'getNtotal is 0 for an unknown index (as the original)');
    await stillServing();
  });

  it('creating an existing index with a different config', async () => {
    await rejectsWith(client.createIndex(HEALTHY, { indexBuilderType: 'flat', dim: dim * 2, metric: 'l2', trainNum: 1 }), ValidationError, 'cfg', /drop it first/);
    await rejectsWith(client.createIndex(HEALTHY, { indexBuilderType: 'flat', dim, metric: 'dot', trainNum: 1 }), ValidationError, 'cfg');
    await rejectsWith(raw[1]!.call('createIndex', { indexId: HEALTHY, cfg: { indexBuilderType: 'ivf_simple', dim } }), ValidationError, 'cfg');
    // The same config again is a no-op.
    await client.createIndex(HEALTHY, { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    await stillServing();
  });

  it('invalid config values: negative centroids, unknown builder type, unknown metric', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ indexBuilderType: 'ivf_simple', dim, centroids: -4 }, 'centroids'],
      [{ index_builder_type: 'ivf_simple', dim, centroids: '-4' }, 'centroids'],
      [{ indexBuilderType: 'ivf_fancy', dim }, 'indexBuilderType'],
      [{ indexBuilderType: 'flat', dim, metric: 'manhattan' }, 'metric'],
      [{ indexBuilderType: 'flat', dim: 0 }, 'dim'],
      [{ indexBuilderType: 'flat', dim: 2.5 }, 'dim'],
      [{ indexBuilderType: 'ivf_simple', dim, nprobe: 0 }, 'nprobe'],
      [{ indexBuilderType: 'flat', dim, trainRatio: 2 }, 'trainRatio'],
    ];
    for (const [cfg, field] of cases) {
      // The client validates before sending...
      await rejectsWith(client.createIndex('bad-cfg', cfg as never), ValidationError, field);
      // ...and the server validates what arrives.
      await rejectsWith(raw[0]!.call('createIndex', { indexId: 'bad-cfg', cfg }), ValidationError, field);
    }
    await rejectsWith(raw[0]!.call('createIndex', { indexId: 'bad-cfg', cfg: [1, 2] }), ValidationError, 'args.cfg');
    await rejectsWith(raw[0]!.call('getInfo', { indexId: 'bad-cfg' }), UnknownIndexError, undefined);
    await stillServing();
  });

  it('invalid config values: malformed factory string', async () => {
    // A stray brace is caught by the config parser on both sides.
    await rejectsWith(client.createIndex('bad-factory', { faissFactory: 'IVF{centroid},Flat', dim }), ValidationError, 'faissFactory', /placeholder/);
    await rejectsWith(raw[0]!.call('createIndex', { indexId: 'bad-factory', cfg: { faissFactory: 'IVF{centroid},Flat', dim } }), ValidationError, 'faissFactory');
    // A string only FAISS can judge: the server builds it when the index is created.
    await rejectsWith(client.createIndex('bad-factory', { faissFactory: 'NotAnIndex,Foo', dim }), ValidationError, 'faissFactory', /could not parse|NotAnIndex/);
    await rejectsWith(client.createIndex('bad-factory', { faissFactory: 'IVF{centroids},PQ3', dim }), ValidationError, 'faissFactory');
    await rejectsWith(client.createIndex('bad-factory', { indexBuilderType: 'knnlm', dim, extra: { codeSize: 3 } }), ValidationError, 'code_size');
    // Nothing was half-created on any server.
    for (const r of raw) await rejectsWith(r.call('getInfo', { indexId: 'bad-factory' }), UnknownIndexError);
    // A valid factory string still works.
    await client.createIndex('good-factory', { faissFactory: 'IVF{centroids},Flat', dim, centroids: 2, trainNum: 0 });
    await client.dropIndex('good-factory');
    await stillServing();
  });

  it('invalid config values: more centroids than training vectors', async () => {
    // With trainNum set, training always uses trainNum vectors: refused at creation.
    await rejectsWith(client.createIndex('many-lists', { indexBuilderType: 'ivf_simple', dim, centroids: 64, trainNum: 10 }), ValidationError, 'centroids', /training vectors \(10\)/);
    await rejectsWith(raw[1]!.call('createIndex', { indexId: 'many-lists', cfg: { indexBuilderType: 'ivf_simple', dim, centroids: 64, trainNum: 10 } }), ValidationError, 'centroids');
    // trainNum 0 (train on request): only known at training time. The error reaches syncTrain
    // and getInfo().error (of every shard, or of the one that trained for all), the buffered
    // vectors stay, and the server keeps serving.
    for (const trainMode of ['per-shard', 'shared'] as const) {
      await client.createIndex('many-lists', { indexBuilderType: 'ivf_simple', dim, centroids: 64, trainNum: 0, trainMode });
      await client.addIndexData('many-lists', data.base(20, 0));
      await client.addIndexData('many-lists', data.base(20, 20));
      await rejectsWith(client.syncTrain('many-lists'), ValidationError, 'centroids', /at most as many IVF lists as training vectors \(\d+\)/);
      let total = 0;
      let reported = 0;
      for (const r of raw) {
        const info = (await r.call<{ state: string; total: number; error: string | null }>('getInfo', { indexId: 'many-lists' })).result;
        assert.equal(info.state, 'NOT_TRAINED');
        if (/invalid centroids: expected at most as many IVF lists/.test(info.error ?? '')) reported++;
        total += info.total;
      }
      assert.equal(reported, trainMode === 'shared' ? 1 : raw.length, trainMode);
      assert.equal(total, 40, 'the acknowledged vectors are still buffered');
      await rejectsWith(client.search('many-lists', data.base(1, 0), 1), IndexStateError);
      await client.dropIndex('many-lists');
      await stillServing();
    }
  });

  it('a search parameter the index type does not have, set before training (found by the socket fuzz)', async () => {
    await client.createIndex('param', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 5 });
    // Refused at once (the per-type table, issue 12), instead of making every later training fail.
    await rejectsWith(client.setNprobe('param', 4), ValidationError, 'name', /has none/);
    await rejectsWith(client.setSearchParameter('param', 'efSearch', 4), ValidationError, 'name');
    await rejectsWith(raw[0]!.call('setSearchParameter', { indexId: 'param', name: 'nprobe', value: 4 }), ValidationError, 'name');
    await rejectsWith(raw[0]!.call('setSearchParameter', { indexId: 'param', name: 'no such', value: 1 }), ValidationError, 'args.name');
    // Training triggered by adds (in the background) then works.
    await client.addIndexData('param', data.base(10, 0));
    await client.addIndexData('param', data.base(10, 10));
    const end = Date.now() + 10_000;
    while ((await client.getNtotal('param')) < 20 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await client.getNtotal('param'), 20);
    await client.dropIndex('param');
    await stillServing();
  });

  it('k <= 0, non-integer or absurdly large k', async () => {
    for (const k of [0, -1, 1.5, Number.NaN, Infinity, 2 ** 20 + 1, 1e12]) {
      await rejectsWith(client.search(HEALTHY, probe, k), ValidationError, 'k', /between 1 and 1048576/);
      await rejectsWith(client.searchWithFilter(HEALTHY, probe, k, { filterPos: 0, filterValue: 1 }), ValidationError, 'k');
    }
    for (const k of [0, -1, 1.5, 2 ** 20 + 1, 1e12, '3', null]) {
      await rejectsWith(raw[0]!.call('search', { indexId: HEALTHY, k }, [probe]), ValidationError, 'args.k');
    }
    await stillServing();
  });

  it('search before any data (IndexStateError)', async () => {
    await client.createIndex('empty', { indexBuilderType: 'flat', dim, metric: 'l2' });
    await rejectsWith(client.search('empty', probe, 3), IndexStateError, undefined, /no searchable vectors yet/);
    await client.dropIndex('empty');
    // Data buffered but not trained yet (an IVF index, trainNum 0): still nothing searchable.
    // (A flat index needs no training: searchable after its first add, issue 12.)
    await client.createIndex('empty', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 2 });
    await client.addIndexData('empty', data.base(5, 0));
    await rejectsWith(client.search('empty', probe, 3), IndexStateError);
    await rejectsWith(client.getCentroids('empty'), IndexStateError);
    await rejectsWith(client.addBufferToIndex('empty'), IndexStateError);
    await client.dropIndex('empty');
    await stillServing();
  });
});

// ---------------------------------------------------------------- frames over raw sockets

function frame(env: Envelope, att: Attachment[] = []): Buffer {
  return Buffer.concat(encodeFrame(env, att).parts);
}

const hello = (version = PROTOCOL_VERSION, id = 1) => frame({ v: version, id, method: 'hello', args: { version } });

/** Sends `bytes` on a fresh socket (then FIN unless keepOpen) and collects what the server sends until it closes. */
async function rawSession(bytes: Uint8Array, opts: { keepOpen?: boolean; timeoutMs?: number } = {}): Promise<{ frames: Envelope[]; ms: number }> {
  const t0 = Date.now();
  const socket = net.connect({ port: cluster.servers[0]!.port, host: '127.0.0.1' });
  socket.on('error', () => {});
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  if (opts.keepOpen) socket.write(bytes);
  else socket.end(bytes);
  const timeoutMs = opts.timeoutMs ?? 5000;
  const timer = new Promise<'hang'>((resolve) => setTimeout(() => resolve('hang'), timeoutMs).unref());
  const outcome = await Promise.race([closed, timer]);
  socket.destroy();
  assert.notEqual(outcome, 'hang', `the server did not close the connection within ${timeoutMs} ms`);
  const all = Buffer.concat(chunks);
  const frames: Envelope[] = [];
  for (let off = 0; off + 16 <= all.length; ) {
    const len = all.readUInt32LE(off + 4);
    frames.push(decodeFrame(Uint8Array.prototype.slice.call(all, off, off + len)).envelope);
    off += len;
  }
  return { frames, ms: Date.now() - t0 };
}

function goodbyeOf(frames: Envelope[]): { code: string; message: string } {
  const last = frames[frames.length - 1];
  assert.ok(last && 'ok' in last && !last.ok, `expected an error reply last, got ${JSON.stringify(frames)}`);
  return last.error;
}

describe('frames', () => {
  it('frames larger than the configured maximum (--max-frame-mb 1)', async () => {
    // The client learns the limit in hello and refuses locally, naming the frame size.
    const big = data.base(40_000, 0); // 1.25 MiB
    await rejectsWith(client.addIndexData(HEALTHY, big), ValidationError, /frame/, /1048576/);
    // A raw peer that sends the header of a 2 MiB frame is cut off before the body arrives.
    const header = Buffer.alloc(16);
    header.write('DFAI', 0, 'latin1');
    header.writeUInt32LE(2 * 1024 * 1024, 4);
    header.writeUInt32LE(32, 8);
    const { frames } = await rawSession(Buffer.concat([hello(), header]), { keepOpen: true });
    assert.equal((frames[0] as { ok?: boolean }).ok, true, 'hello answered');
    const bye = goodbyeOf(frames);
    assert.equal(bye.code, 'PROTOCOL');
    assert.match(bye.message, /exceeds the limit of 1048576 bytes/);
    // Before the handshake the limit is 64 KiB.
    header.writeUInt32LE(128 * 1024, 4);
    const early = goodbyeOf((await rawSession(header, { keepOpen: true })).frames);
    assert.equal(early.code, 'PROTOCOL');
    assert.match(early.message, /65536/);
    await stillServing();
  });

  it('request id 0 (reserved for goodbye frames) is refused in every stage, hello included (issue 12)', async () => {
    // Before: the hello was answered with id 0, which the client reads as a goodbye.
    const { frames } = await rawSession(hello(PROTOCOL_VERSION, 0), { keepOpen: true });
    assert.equal(frames.length, 1, `only the goodbye, no hello reply: ${JSON.stringify(frames)}`);
    const bye = goodbyeOf(frames);
    assert.equal(bye.code, 'PROTOCOL');
    assert.match(bye.message, /request id 0 is reserved \(for goodbye frames\); 'hello' must use an id from 1/);
    // After the handshake, as before.
    const later = await rawSession(Buffer.concat([hello(), frame({ v: 1, id: 0, method: 'getNtotal', args: { indexId: HEALTHY } })]), { keepOpen: true });
    assert.equal((later.frames[0] as { ok?: boolean }).ok, true, 'hello answered');
    assert.match(goodbyeOf(later.frames).message, /request id 0 is reserved/);
    await stillServing();
  });

  it('truncated frames', async () => {
    const request = frame({ v: 1, id: 2, method: 'search', args: { indexId: HEALTHY, k: 1 } }, [probe]);
    for (const cut of [3, 15, 16, 40, request.length - 1]) {
      // The stream ends in the middle of a frame: the server closes the connection.
      await rawSession(Buffer.concat([hello(), request.subarray(0, cut)]));
    }
    // A frame whose length field is shorter than its contents.
    const short = Buffer.from(request);
    short.writeUInt32LE(24, 4);
    assert.equal(goodbyeOf((await rawSession(Buffer.concat([hello(), short]))).frames).code, 'PROTOCOL');
    await stillServing();
  });

  it('garbage bytes', async () => {
    const garbage = Buffer.from(Array.from({ length: 256 }, (_, i) => (i * 97 + 13) & 0xff));
    let bye = goodbyeOf((await rawSession(garbage)).frames);
    assert.equal(bye.code, 'PROTOCOL');
    assert.match(bye.message, /bad frame magic/);
    bye = goodbyeOf((await rawSession(Buffer.concat([hello(), garbage]))).frames);
    assert.equal(bye.code, 'PROTOCOL');
    // An HTTP request, and a TLS ClientHello, to a plain dfaiss port.
    assert.equal(goodbyeOf((await rawSession(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))).frames).code, 'PROTOCOL');
    assert.match(goodbyeOf((await rawSession(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0]))).frames).message, /TLS/);
    // A valid frame header around an envelope that is not msgpack.
    const env = Buffer.from([0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1]);
    const header = Buffer.alloc(16);
    header.write('DFAI', 0, 'latin1');
    header.writeUInt32LE(24, 4);
    header.writeUInt32LE(8, 8);
    assert.equal(goodbyeOf((await rawSession(Buffer.concat([hello(), header, env]))).frames).code, 'PROTOCOL');
    await stillServing();
  });

  it('wrong protocol version', async () => {
    const { frames } = await rawSession(hello(PROTOCOL_VERSION + 1), { keepOpen: true });
    const err = goodbyeOf(frames);
    assert.equal(err.code, 'PROTOCOL');
    assert.match(err.message, new RegExp(`${PROTOCOL_VERSION + 1}.*${PROTOCOL_VERSION}|${PROTOCOL_VERSION}.*${PROTOCOL_VERSION + 1}`));
    // Through the client: a ProtocolError from connect.
    await rejectsWith(RpcClient.connect('127.0.0.1', cluster.servers[0]!.port, { protocolVersion: PROTOCOL_VERSION + 1 }), ProtocolError);
    // A later frame with another version, after a good hello.
    const later = frame({ v: PROTOCOL_VERSION + 1, id: 2, method: 'getNtotal', args: { indexId: HEALTHY } });
    const mixed = await rawSession(Buffer.concat([hello(), later]), { keepOpen: true, timeoutMs: 3000 });
    assert.equal(goodbyeOf(mixed.frames).code, 'PROTOCOL');
    await stillServing();
  });

  it('a client that connects and never speaks', async () => {
    // Several at once: each is closed after the hello deadline with a goodbye saying why.
    const sessions = await Promise.all(Array.from({ length: 8 }, () => rawSession(new Uint8Array(0), { keepOpen: true, timeoutMs: HELLO_TIMEOUT_MS + 3000 })));
    for (const { frames, ms } of sessions) {
      const bye = goodbyeOf(frames);
      assert.equal(bye.code, 'PROTOCOL');
      assert.match(bye.message, /no hello within 1500 ms/);
      assert.ok(ms >= HELLO_TIMEOUT_MS - 100 && ms < HELLO_TIMEOUT_MS + 2500, `closed after ${ms} ms`);
    }
    // Half a header and then silence: the same deadline.
    const half = await rawSession(Buffer.from('DFAI'), { keepOpen: true, timeoutMs: HELLO_TIMEOUT_MS + 3000 });
    assert.equal(goodbyeOf(half.frames).code, 'PROTOCOL');
    await stillServing();
  });

  it('a client that stalls in the middle of a frame after the handshake (--frame-timeout-ms)', async () => {
    const request = frame({ v: PROTOCOL_VERSION, id: 2, method: 'search', args: { indexId: HEALTHY, k: 1 } }, [probe]);
    const cut = request.subarray(0, request.byteLength - 7);
    const { frames, ms } = await rawSession(Buffer.concat([hello(), cut]), { keepOpen: true, timeoutMs: FRAME_TIMEOUT_MS + 3000 });
    assert.equal((frames[0] as { ok?: boolean }).ok, true, 'hello answered');
    const bye = goodbyeOf(frames);
    assert.equal(bye.code, 'PROTOCOL');
    assert.match(bye.message, new RegExp(`sent ${cut.byteLength} of ${request.byteLength} bytes of a frame and then nothing for ${FRAME_TIMEOUT_MS} ms`));
    assert.ok(ms >= FRAME_TIMEOUT_MS - 100 && ms < FRAME_TIMEOUT_MS + 2500, `closed after ${ms} ms`);
    // The pooled client connections sat idle (between frames) for longer; they still work.
    await stillServing();
  });
});

describe('storage root', () => {
  // Ids such as '..' or '../escaped' are accepted now, in an encoded folder (issue 12;
  // test/cluster/original-semantics.test.ts): only non-printable or too long ids are refused.
  it('index ids that are not printable or too long', async () => {
    const before = readdirSync(cluster.dir).sort();
    for (const id of ['a\0b', 'tab\there', 'line\n', '\u0085', 'x'.repeat(129), ':'.repeat(86)]) {
      await rejectsWith(client.createIndex(id, { indexBuilderType: 'flat', dim }), ValidationError, /indexId$/);
      await rejectsWith(raw[0]!.call('createIndex', { indexId: id, cfg: { indexBuilderType: 'flat', dim } }), ValidationError, /indexId$/);
      await rejectsWith(raw[0]!.call('loadIndex', { indexId: id }), ValidationError, /indexId$/);
      await rejectsWith(raw[0]!.call('dropIndex', { indexId: id }), ValidationError, /indexId$/);
      await rejectsWith(raw[0]!.call('getNtotal', { indexId: id }), ValidationError, /indexId$/);
    }
    await rejectsWith(raw[0]!.call('createIndex', { indexId: '', cfg: {} }), ValidationError, 'args.indexId');
    await rejectsWith(raw[0]!.call('createIndex', { indexId: 42, cfg: {} }), ValidationError, 'args.indexId');
    assert.deepEqual(readdirSync(cluster.dir).sort(), before, 'nothing created beside the storage root');
    assert.ok(!existsSync('/tmp/escaped'));
    await stillServing();
  });

  it('indexStorageDir in the cfg outside the root', async () => {
    const before = readdirSync(cluster.dir).sort();
    for (const dir of ['..', '../elsewhere', 'sub/../../elsewhere', cluster.dir, '/tmp', 'a\0b']) {
      await rejectsWith(client.createIndex('stored', { indexBuilderType: 'flat', dim, indexStorageDir: dir }), ValidationError, 'indexStorageDir');
      await rejectsWith(raw[1]!.call('createIndex', { indexId: 'stored', cfg: { indexBuilderType: 'flat', dim, indexStorageDir: dir } }), ValidationError, 'indexStorageDir');
      await rejectsWith(raw[1]!.call('loadIndex', { indexId: 'stored', cfg: { indexBuilderType: 'flat', dim, indexStorageDir: dir } }), ValidationError, 'indexStorageDir');
    }
    assert.deepEqual(readdirSync(cluster.dir).sort(), before, 'nothing created beside the storage root');
    // A sub-folder inside the root is fine (relative paths are taken from the root).
    await client.createIndex('stored', { indexBuilderType: 'flat', dim, indexStorageDir: 'sub/dir' });
    assert.ok(existsSync(join(cluster.saveDir, 'sub', 'dir', 'stored', '0', 'cfg.json')));
    await client.dropIndex('stored');
    await stillServing();
  });
});
