// A shared training never depends on the client that started it (issue 12, defect 1): the
// client closes or is SIGKILLed at each step, and the next client that touches the index
// (getState, search, add) finishes it from what the servers hold. getState never reports
// NOT_TRAINED while a training is under way.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { IndexClient, IndexState } from '../../src/index.js';
import { defaultIndexCfg } from '../../src/config/index.js';
import { encodeMetadata, offsetsBytes } from '../../src/protocol/metadata.js';
import { RpcClient } from '../../src/protocol/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 32;
const data = new SyntheticDataset({ dim, seed: 7 });
const cfg = { indexBuilderType: 'ivf_simple', dim, centroids: 64, trainNum: 4000, metric: 'l2' } as const;
const INGEST = new URL('../helpers/ingest-client.ts', import.meta.url).pathname;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: TestCluster;
let raw: RpcClient[] = [];
before(async () => {
  cluster = await startCluster(4);
  raw = await Promise.all(cluster.servers.map((s) => RpcClient.connect('127.0.0.1', s.port)));
});
after(async () => {
  await Promise.all(raw.map((r) => r.close()));
  await cluster.stop();
});

interface Info {
  state: string;
  ntotal: number;
  buffered: number;
}
const infos = async (id: string): Promise<Info[]> => Promise.all(raw.map(async (r) => (await r.call<Info>('getInfo', { indexId: id })).result));

/** Watches the servers only (no IndexClient, which would finish the training itself). */
async function waitServersTrained(id: string, ntotal: number, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const all = await infos(id);
    if (all.every((i) => i.state === IndexState.TRAINED) && all.reduce((a, i) => a + i.ntotal, 0) === ntotal) return;
    if (Date.now() > end) throw new Error(`after ${timeoutMs} ms: ${JSON.stringify(all)}`);
    await sleep(50);
  }
}

/** Polls getState until TRAINED; every state seen on the way must be TRAINING or later. */
async function getStateUntilTrained(client: IndexClient, id: string, timeoutMs = 20_000): Promise<IndexState[]> {
  const seen: IndexState[] = [];
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await client.getState(id);
    seen.push(s);
    assert.notEqual(s, IndexState.NOT_TRAINED, `getState said NOT_TRAINED while a training was due or running (${seen.join(',')})`);
    if (s === IndexState.TRAINED) return seen;
    assert.ok(Date.now() < end, `still ${s} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

function runIngest(mode: 'close' | 'kill'): Promise<{ code: number | null; signal: string | null; out: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', INGEST, cluster.discovery, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, out })));
}

/** Creates the index and buffers 4 x 1000 rows through raw RPC (no client-side training logic). */
async function rawIngest(id: string): Promise<void> {
  for (const r of raw) await r.call('createIndex', { indexId: id, cfg: defaultIndexCfg(cfg) });
  for (let b = 0; b < 4; b++) {
    const { blob, offsets } = encodeMetadata(Array.from({ length: 1000 }, (_, i) => b * 1000 + i), 1000);
    await raw[b]!.call('addIndexData', { indexId: id, n: 1000, key: `k${b}` }, [data.base(1000, b * 1000), blob, offsetsBytes(offsets)]);
  }
}

const lowestRank = () => raw.reduce((best, r, i) => ((r.server.rank ?? i) < (raw[best]!.server.rank ?? best) ? i : best), 0);

test('a client that closes right after its last add: close() waits, every shard is trained without another client', { timeout: 60_000 }, async () => {
  const r = await runIngest('close');
  assert.equal(r.code, 0);
  assert.match(r.out, /added/);
  const now = await infos('iv');
  assert.ok(now.every((i) => i.state !== IndexState.NOT_TRAINED), `every shard trained when close() returned: ${JSON.stringify(now)}`);
  await waitServersTrained('iv', 4000);
  const c = await IndexClient.connect(cluster.discovery);
  await c.dropIndex('iv');
  await c.close();
});

test('a client SIGKILLed right after its last add: the next getState starts the training and reports TRAINING, then TRAINED', { timeout: 60_000 }, async () => {
  const r = await runIngest('kill');
  assert.equal(r.signal, 'SIGKILL');
  assert.match(r.out, /added/);
  const c = await IndexClient.connect(cluster.discovery);
  try {
    await getStateUntilTrained(c, 'iv');
    await waitServersTrained('iv', 4000);
    const hits = await c.search('iv', data.base(5), 1);
    assert.deepEqual(hits.metadata.map((m) => m[0]), [0, 1, 2, 3, 4]);
  } finally {
    await c.dropIndex('iv');
    await c.close();
  }
});

test('killed after the trainer trained, before any install: a client that only searches installs it everywhere', { timeout: 60_000 }, async () => {
  await rawIngest('t2');
  const t = lowestRank();
  const sample = data.base(4000);
  await raw[t]!.call('trainShared', { indexId: 't2' }, [sample]); // ... and the client dies here
  assert.deepEqual(
    (await infos('t2')).map((i) => i.state !== IndexState.NOT_TRAINED),
    raw.map((_, i) => i === t),
  );
  const c = await IndexClient.connect(cluster.discovery, { reconnectIntervalMs: 100 });
  try {
    const end = Date.now() + 20_000;
    for (;;) {
      await c.search('t2', data.base(1), 1);
      const all = await infos('t2');
      if (all.every((i) => i.state === IndexState.TRAINED) && all.reduce((a, i) => a + i.ntotal, 0) === 4000) break;
      assert.ok(Date.now() < end, `searching did not finish the training: ${JSON.stringify(all)}`);
      await sleep(50);
    }
  } finally {
    await c.dropIndex('t2');
    await c.close();
  }
});

test('killed while the trainer trains: getState joins the running training (TRAINING), and installs it', { timeout: 60_000 }, async () => {
  await rawIngest('t3');
  const t = lowestRank();
  const dying = await RpcClient.connect('127.0.0.1', cluster.servers[t]!.port);
  dying.call('trainShared', { indexId: 't3' }, [data.base(4000)]).catch(() => {});
  for (let i = 0; (await infos('t3'))[t]!.state === IndexState.NOT_TRAINED; i++) {
    assert.ok(i < 400, 'the trainer started');
    await sleep(5);
  }
  await dying.close(); // the client is gone while (or just after) its trainer trains
  const c = await IndexClient.connect(cluster.discovery);
  try {
    await getStateUntilTrained(c, 't3');
    await waitServersTrained('t3', 4000);
  } finally {
    await c.dropIndex('t3');
    await c.close();
  }
});

test('killed half-way through the installs: the next add finishes them, with the same centroids everywhere', { timeout: 60_000 }, async () => {
  await rawIngest('t4');
  const t = lowestRank();
  const trained = await raw[t]!.call('trainShared', { indexId: 't4' }, [data.base(4000)]);
  const other = (t + 1) % raw.length;
  await raw[other]!.call('installTrained', { indexId: 't4' }, [trained.attachments[0] as Float32Array]);
  const c = await IndexClient.connect(cluster.discovery);
  try {
    await c.addIndexData('t4', data.base(10, 9000));
    await waitServersTrained('t4', 4010);
    const cs = await c.getCentroids('t4');
    for (const x of cs) assert.ok(Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength).equals(Buffer.from(cs[0]!.data.buffer, cs[0]!.data.byteOffset, cs[0]!.data.byteLength)));
  } finally {
    await c.dropIndex('t4');
    await c.close();
  }
});
