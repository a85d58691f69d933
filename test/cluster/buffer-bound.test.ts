// Issue 14, item 4: vectors waiting for training are bounded in memory. Two real servers
// with --max-buffered-mb 1 take 5 MiB of vectors while a shared training runs: adds past
// the bound wait for room (the server answers busy after 1 s, the client resends), no shard
// ever holds more than the bound outside FAISS, and nothing is lost. A per-shard training whose trainNum alone exceeds the bound is refused
// when the index is created, with a message naming the field and the flag (at a 512 MiB
// bound: the sizes a 768-d per-shard training reaches).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ServerBusyError, ValidationError } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { halfToFloat32 } from '../../src/vectors.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 32;
const BOUND = 2 ** 20; // --max-buffered-mb 1
const data = new SyntheticDataset({ dim, seed: 1414 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: TestCluster;
let client: IndexClient;

before(async () => {
  cluster = await startCluster(2, { serverArgs: ['--max-buffered-mb', '1'] });
  client = await IndexClient.connect(cluster.discovery);
});

after(async () => {
  await client?.close();
  await cluster?.stop();
});

describe('buffered vectors are bounded (--max-buffered-mb)', () => {
  it('more vectors than the bound while a shared training runs: each shard stays within it, nothing lost, trained and searchable', async () => {
    const rows = 1000;
    const batches = 40; // 40,000 x 32 floats = 5 MiB, 2.5 MiB per server
    // Training starts once the cluster buffers 16,000: 8,000 per shard (1,024,000 B), just under the bound.
    await client.createIndex('bounded', { indexBuilderType: 'ivf_simple', dim, centroids: 256, nprobe: 16, trainNum: 16_000, metric: 'l2' });
    const base = data.base(rows * batches);
    let maxHeld = 0;
    let done = false;
    const watch = (async () => {
      while (!done) {
        for (const s of await client.status()) {
          const info = (s.indexes as Record<string, { buffered: number }>).bounded;
          if (info) maxHeld = Math.max(maxHeld, info.buffered * dim * 4);
        }
        await sleep(2);
      }
    })();
    await Promise.all(
      Array.from({ length: batches }, (_, b) =>
        client.addIndexData('bounded', base.subarray(b * rows * dim, (b + 1) * rows * dim), Array.from({ length: rows }, (_, i) => [b * rows + i])),
      ),
    );
    while ((await client.getState('bounded')) !== IndexState.TRAINED || (await client.getNtotal('bounded')) < rows * batches) await sleep(20);
    done = true;
    await watch;
    assert.ok(maxHeld <= BOUND, `a shard held ${maxHeld} B outside FAISS, the bound is ${BOUND}`);
    assert.ok(maxHeld >= 8000 * dim * 4, `the bound was reached (${maxHeld} B held at most)`);
    assert.equal(await client.getNtotal('bounded'), rows * batches);
    const ids = await client.getIds('bounded');
    assert.equal(ids.size, rows * batches, 'every row stored once');
    const q = base.subarray(12_345 * dim, 12_346 * dim);
    const r = await client.search('bounded', q, 1);
    assert.deepEqual(r.metadata[0], [[12_345]], 'a stored vector finds itself');
  });

  it('a full buffer with no training in sight answers busy: a client that may not wait gets ServerBusyError (nothing stored), one that may is resent until another client trains', async () => {
    // Shared training at a trainNum no load reaches: nothing trains until someone asks.
    await client.createIndex('stalled', { indexBuilderType: 'ivf_simple', dim, centroids: 16, trainNum: 1_000_000, trainMode: 'shared', metric: 'l2' });
    const rows = 8000; // 1,024,000 B: one batch fills a server's bound
    const base = data.base(rows * 4);
    const batch = (b: number): Float32Array => base.subarray(b * rows * dim, (b + 1) * rows * dim);
    await client.addIndexData('stalled', batch(0));
    await client.addIndexData('stalled', batch(1));
    const lines: string[] = [];
    const impatient = await IndexClient.connect(cluster.discovery, { busyRetryMs: 0, log: (m) => lines.push(m) });
    try {
      const t0 = Date.now();
      const err = await impatient.addIndexData('stalled', batch(2)).then(() => null, (e: unknown) => e);
      assert.ok(err instanceof ServerBusyError, `refused with ${String(err)}`);
      assert.match(err.message, /holds 1\.0 MiB of vectors not yet in FAISS and may hold 1\.0 MiB \(--max-buffered-mb\): the batch was not stored/);
      assert.match(err.message, /syncTrain/);
      assert.ok(Date.now() - t0 >= 900, 'the server held the add for its wait first');
    } finally {
      await impatient.close();
    }
    // A call's own deadline bounds the resending too.
    const t1 = Date.now();
    const late = await client.addIndexData('stalled', batch(2), null, { timeoutMs: 2500 }).then(() => null, (e: unknown) => e);
    assert.ok(late instanceof ServerBusyError, `refused with ${String(late)}`);
    assert.ok(Date.now() - t1 < 6000, `gave up near its 2.5 s deadline (${Date.now() - t1} ms)`);
    // An abort ends the resending at once, with the signal's reason.
    const ac = new AbortController();
    const reason = new Error('stop resending');
    setTimeout(() => ac.abort(reason), 1500);
    const aborted = await client.addIndexData('stalled', batch(2), null, { signal: ac.signal }).then(() => null, (e: unknown) => e);
    assert.equal(aborted, reason);
    let stored = false;
    const busyEvents: string[] = [];
    const patientLines: string[] = [];
    const patientClient = await IndexClient.connect(cluster.discovery, { log: (m) => patientLines.push(m) });
    patientClient.on('serverBusy', ({ server }) => busyEvents.push(server));
    const patient = patientClient.addIndexData('stalled', batch(3)).then(() => (stored = true));
    await sleep(2500); // past the server's 1 s wait: busy replies, resent
    assert.equal(stored, false, 'still waiting for room');
    assert.ok(busyEvents.length >= 1, 'each busy reply is a serverBusy event');
    assert.equal(patientLines.length, 1, `one log line per 30 s while busy: ${patientLines.join(' | ')}`);
    assert.match(patientLines[0]!, /is busy, resending adds until it has room .*--max-buffered-mb/);
    assert.equal(lines.length, 0, 'a client that does not resend logs nothing');
    const trainer = await IndexClient.connect(cluster.discovery);
    try {
      await trainer.syncTrain('stalled');
    } finally {
      await trainer.close();
    }
    await patient;
    await patientClient.close();
    while ((await client.getNtotal('stalled')) < 3 * rows) await sleep(20);
    assert.equal(await client.getNtotal('stalled'), 3 * rows, 'the refused batch was not stored, the resent one once');
    const q = batch(3).subarray(5 * dim, 6 * dim);
    assert.equal((await client.search('stalled', q, 1)).scores[0]![0], 0, 'the resent batch is searchable');
  });

  it('float16 input waits at its own size (2 bytes a value): the bound holds twice the rows it would as float32', async () => {
    await client.createIndex('stalled16', { indexBuilderType: 'ivf_simple', dim, centroids: 16, trainNum: 1_000_000, trainMode: 'shared', metric: 'l2' });
    const rows = 8000; // 512,000 B as float16: two such batches fit a server's 1 MiB bound, as float32 one does
    const half = Uint16Array.from({ length: rows * 5 * dim }, (_, i) => 0x3000 + ((i * 7919) % 0x0fff)); // finite halves in [0.125, 0.5)
    const batch = (b: number): Uint16Array => half.subarray(b * rows * dim, (b + 1) * rows * dim);
    const impatient = await IndexClient.connect(cluster.discovery, { busyRetryMs: 0 });
    try {
      for (let b = 0; b < 4; b++) await impatient.addIndexData('stalled16', batch(b)); // round-robin: two per server
      for (const s of await client.status()) {
        const info = (s.indexes as Record<string, { buffered: number; bufferedBytes: number }>).stalled16!;
        assert.equal(info.buffered, 2 * rows);
        assert.equal(info.bufferedBytes, 2 * rows * dim * 2, 'status reports the bytes the bound counts');
      }
      const err = await impatient.addIndexData('stalled16', batch(4)).then(() => null, (e: unknown) => e);
      assert.ok(err instanceof ServerBusyError, `the fifth is refused: ${String(err)}`);
      assert.match(err.message, /holds 1\.0 MiB of vectors not yet in FAISS/);
      await impatient.syncTrain('stalled16');
    } finally {
      await impatient.close();
    }
    while ((await client.getNtotal('stalled16')) < 4 * rows) await sleep(20);
    const q = halfToFloat32(batch(3).subarray(7 * dim, 8 * dim));
    assert.equal((await client.search('stalled16', q, 1)).scores[0]![0], 0, 'a float16 vector finds itself after its widening');
  });

  it('records with ids are resent on busy too: an upsert into a full buffer waits for room, then lands', async () => {
    await client.createIndex('stalled-ids', { indexBuilderType: 'ivf_simple', dim, centroids: 16, trainNum: 1_000_000, trainMode: 'shared', metric: 'l2' });
    const rows = 8000;
    const base = data.base(rows * 3);
    // Ids spread over both servers (each id has a home server): 16,000 ids fill both bounds.
    const ids = Array.from({ length: 3 * rows }, (_, i) => `r${i}`);
    await client.addIndexData('stalled-ids', base.subarray(0, 2 * rows * dim), null, { ids: ids.slice(0, 2 * rows) });
    const impatient = await IndexClient.connect(cluster.discovery, { busyRetryMs: 0 });
    try {
      const err = await impatient.upsert('stalled-ids', ids.slice(2 * rows), base.subarray(2 * rows * dim)).then(() => null, (e: unknown) => e);
      assert.ok(err instanceof ServerBusyError, `refused with ${String(err)}`);
    } finally {
      await impatient.close();
    }
    let stored = false;
    const patient = client.upsert('stalled-ids', ids.slice(2 * rows), base.subarray(2 * rows * dim)).then(() => (stored = true));
    await sleep(1500);
    assert.equal(stored, false, 'still waiting for room');
    await client.syncTrain('stalled-ids');
    await patient;
    const got = await client.get('stalled-ids', ['r0', `r${3 * rows - 1}`]);
    assert.deepEqual(got.unknown, []);
    assert.equal(got.records.length, 2);
  });

  it('a per-shard training that cannot start under the bound: the index is refused when created, naming the field and the flag', async () => {
    // 20,000 x 32 floats = 2.5 MiB must be buffered before this shard trains: more than 1 MiB.
    const err = await client
      .createIndex('too-big', { indexBuilderType: 'ivf_simple', dim, centroids: 16, trainNum: 20_000, trainMode: 'per-shard', metric: 'l2' })
      .then(() => null, (e: unknown) => e);
    assert.ok(err instanceof ValidationError, `refused with ${String(err)}`);
    assert.match(err.message, /invalid trainNum/);
    assert.match(err.message, /at most 8192/);
    assert.match(err.message, /--max-buffered-mb/);
    assert.match(err.message, /trainMode 'shared'/);
    for (const s of await client.status()) assert.equal((s.indexes as Record<string, unknown>)['too-big'], undefined, 'nothing created');
    // The same trainNum with shared training needs only the shard's part of the sample: taken.
    await client.createIndex('shared-ok', { indexBuilderType: 'ivf_simple', dim, centroids: 16, trainNum: 20_000, trainMode: 'shared', metric: 'l2' });
  });
});

describe('a 512 MiB bound (--max-buffered-mb 512)', () => {
  let c2: TestCluster;
  let cl2: IndexClient;
  before(async () => {
    c2 = await startCluster(1, { serverArgs: ['--max-buffered-mb', '512'] });
    cl2 = await IndexClient.connect(c2.discovery);
  });
  after(async () => {
    await cl2?.close();
    await c2?.stop();
  });

  it('at 512 MiB per index: a per-shard training on 200k x 768 (586 MiB) is refused, 150k (439 MiB) is taken', async () => {
    const err = await cl2
      .createIndex('big-768', { indexBuilderType: 'ivf_simple', dim: 768, centroids: 16, trainNum: 200_000, trainMode: 'per-shard', metric: 'l2' })
      .then(() => null, (e: unknown) => e);
    assert.ok(err instanceof ValidationError, `refused with ${String(err)}`);
    assert.match(err.message, /invalid trainNum: expected at most 174762 .*may buffer 512\.0 MiB per index \(--max-buffered-mb\)/);
    await cl2.createIndex('ok-768', { indexBuilderType: 'ivf_simple', dim: 768, centroids: 16, trainNum: 150_000, trainMode: 'per-shard', metric: 'l2' });
    // Flat needs no training: its trainNum buffers nothing and is not checked.
    await cl2.createIndex('flat-768', { indexBuilderType: 'flat', dim: 768, trainNum: 1_000_000, metric: 'l2' });
  });
});

describe('the default bound (no --max-buffered-mb)', () => {
  let c3: TestCluster;
  let cl3: IndexClient;
  before(async () => {
    c3 = await startCluster(1);
    cl3 = await IndexClient.connect(c3.discovery);
  });
  after(async () => {
    await cl3?.close();
    await c3?.stop();
  });

  it('is raised to what a per-shard training must gather: 200k x 768 (586 MiB), which a set 512 MiB bound refuses, is taken; a 768-d per-shard index trains and searches', async () => {
    const d = 768;
    await cl3.createIndex('big-768', { indexBuilderType: 'ivf_simple', dim: d, centroids: 16, trainNum: 200_000, trainMode: 'per-shard', metric: 'l2' });
    // A smaller trainNum shows the same rule without 600 MB of test data: 4,000 rows train.
    await cl3.createIndex('small-768', { indexBuilderType: 'ivf_simple', dim: d, centroids: 16, trainNum: 4000, trainMode: 'per-shard', metric: 'l2' });
    const rows = new SyntheticDataset({ dim: d, seed: 7 }).base(5000);
    await cl3.addIndexData('small-768', rows);
    while ((await cl3.getState('small-768')) !== IndexState.TRAINED || (await cl3.getNtotal('small-768')) < 5000) await sleep(20);
    assert.equal((await cl3.search('small-768', rows.subarray(0, d), 1)).scores[0]![0], 0);
  });
});
