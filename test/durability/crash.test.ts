// Crash test: a real server process is SIGKILLed at random moments during a multi-client
// ingest (training, background adds and snapshots all happen along the way), restarted
// with --load-index, and every acknowledged batch must be back exactly once with its
// metadata. At the end, search results must equal an exact reference over the same data.
// Cycles: DFAISS_CRASH_CYCLES (default 20).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState } from '../../src/index.js';
import { FaissIndex } from '../../src/native/index.js';
import { SyntheticDataset, prng } from '../../src/datasets/synthetic.js';
import { startCluster } from '../helpers/cluster.js';

const CYCLES = Number(process.env.DFAISS_CRASH_CYCLES ?? 20);
const dim = 16;
const ROWS = 200;
const data = new SyntheticDataset({ dim, seed: 31 });
const vectorsOf = (batch: number): Float32Array => data.base(ROWS, batch * ROWS);

async function waitState(client: IndexClient, id: string, want: IndexState[], ms = 30_000): Promise<IndexState> {
  const end = Date.now() + ms;
  for (;;) {
    const s = await client.getState(id);
    if (want.includes(s)) return s;
    if (Date.now() > end) throw new Error(`state ${s} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test(`crash test: ${CYCLES} SIGKILL cycles during ingest, training, background adds and snapshots`, { timeout: 600_000 }, async () => {
  const cluster = await startCluster(1);
  const rand = prng(77);
  const acked = new Set<number>();
  const sent = new Set<number>();
  let nextBatch = 0;
  try {
    let client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 10_000 });
    // IVF with nprobe = nlist scans every list: exact results, comparable with a flat reference.
    await client.createIndex('crash', { indexBuilderType: 'ivf_simple', dim, centroids: 8, nprobe: 8, trainNum: 1500, metric: 'l2', saveIntervalSec: 1 });
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      // Two clients ingest concurrently; a third task snapshots now and then.
      // One server: a writer's add fails at once when it dies (there is no other server to move to).
      const writers = await Promise.all([0, 1].map(() => IndexClient.connect(cluster.discovery, { callTimeoutMs: 10_000 })));
      let stop = false;
      const ingest = writers.map(async (w) => {
        while (!stop) {
          const b = nextBatch++;
          sent.add(b);
          try {
            await w.addIndexData('crash', vectorsOf(b), Array.from({ length: ROWS }, (_, i) => [b, i]));
            acked.add(b);
          } catch {
            return; // the server died under this call: unacknowledged
          }
        }
      });
      const saver = (async () => {
        while (!stop) {
          await new Promise((r) => setTimeout(r, 30 + rand() * 60));
          try {
            await client.saveIndex('crash');
          } catch {
            return;
          }
        }
      })();
      await new Promise((r) => setTimeout(r, 50 + rand() * 250));
      await cluster.kill(0, 'SIGKILL');
      stop = true;
      await Promise.all([...ingest, saver]);
      await Promise.all([...writers, client].map((c) => c.close()));

      await cluster.start(0, ['--load-index']);
      client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 10_000 });
      // Every acknowledged batch is back exactly once; a batch whose reply was lost in the
      // crash may be back too (it was durable), but never twice.
      const status = (await client.status())[0]!.indexes as Record<string, { total: number }>;
      const present = new Set([...(await client.getIds('crash'))].map(Number));
      for (const b of acked) assert.ok(present.has(b), `cycle ${cycle}: acknowledged batch ${b} lost (acked ${[...acked].sort((x, y) => x - y).join(",")}; present ${[...present].sort((x, y) => x - y).join(",")})`);
      for (const b of present) assert.ok(sent.has(b), `cycle ${cycle}: batch ${b} was never sent`);
      assert.equal(status.crash!.total, present.size * ROWS, `cycle ${cycle}: a batch is stored twice`);
      for (const b of present) acked.add(b);
    }

    // Final check: everything indexed, search equals an exact reference over exactly this data.
    if ((await client.getState('crash')) === IndexState.NOT_TRAINED) await client.syncTrain('crash');
    await waitState(client, 'crash', [IndexState.TRAINED]);
    const batches = [...acked].sort((a, b) => a - b);
    assert.equal(await client.getNtotal('crash'), batches.length * ROWS);
    const ref = FaissIndex.fromFactory(dim, 'Flat', 'l2');
    for (const b of batches) await ref.add(vectorsOf(b));
    const queries = data.queries(10);
    const want = await ref.search(queries, 10);
    const got = await client.search('crash', queries, 10);
    for (let q = 0; q < 10; q++) {
      const wantMeta = Array.from({ length: 10 }, (_, i) => {
        const row = Number(want.labels[q * 10 + i]);
        return [batches[Math.floor(row / ROWS)], row % ROWS];
      });
      assert.deepEqual(got.metadata[q], wantMeta, `query ${q}`);
      for (let i = 0; i < 10; i++) assert.ok(Math.abs(got.scores[q]![i]! - want.distances[q * 10 + i]!) <= 1e-4);
    }
    await client.close();
  } finally {
    await cluster.stop();
  }
});

test('a whole 4-server cluster killed with SIGKILL restarts from its folders with identical results', async () => {
  const cluster = await startCluster(4);
  try {
    let client = await IndexClient.connect(cluster.discovery);
    await client.createIndex('four', { indexBuilderType: 'ivf_simple', dim, centroids: 8, nprobe: 4, trainNum: 400, metric: 'dot' });
    for (let b = 0; b < 12; b++) await client.addIndexData('four', vectorsOf(b), Array.from({ length: ROWS }, (_, i) => ({ b, i })));
    await waitState(client, 'four', [IndexState.TRAINED]);
    await client.saveIndex('four');
    for (let b = 12; b < 16; b++) await client.addIndexData('four', vectorsOf(b), Array.from({ length: ROWS }, (_, i) => ({ b, i })));
    await waitState(client, 'four', [IndexState.TRAINED]);
    const before = await client.search('four', data.queries(8), 7);
    await client.close();
    for (let r = 0; r < 4; r++) await cluster.kill(r, 'SIGKILL');
    for (let r = 0; r < 4; r++) await cluster.start(r, ['--load-index']);
    client = await IndexClient.connect(cluster.discovery);
    await waitState(client, 'four', [IndexState.TRAINED]);
    assert.equal(await client.getNtotal('four'), 16 * ROWS);
    assert.deepEqual(await client.search('four', data.queries(8), 7), before);
    await client.close();
  } finally {
    await cluster.stop();
  }
});

test('crash test with records: SIGKILL during upserts, deletes, snapshots and compactions loses nothing acknowledged', { timeout: 300_000 }, async () => {
  // Two servers: records live on their home server, so every upsert and delete touches both.
  const cluster = await startCluster(2);
  const CYCLES_R = Math.max(3, Math.ceil(CYCLES / 3));
  const rand = prng(99);
  const IDS = 400;
  // A distinct vector per (id, version): each record is its own nearest neighbour.
  const vec = (id: number, v: number): Float32Array => data.base(1, id * 1_000_000 + v);
  /** Per id: the last acknowledged state (version, or -1 = deleted) and one unacknowledged state it may have instead. */
  const acked = new Map<number, number>();
  const maybe = new Map<number, number>();
  let version = 0;
  try {
    let client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 10_000 });
    await client.createIndex('rec', { indexBuilderType: 'ivf_simple', dim, centroids: 8, nprobe: 8, trainNum: 300, metric: 'l2', saveIntervalSec: 1 });
    // Start with every id stored (version 0), trained.
    const all = Array.from({ length: IDS }, (_, i) => i);
    const v0 = new Float32Array(IDS * dim);
    all.forEach((i) => v0.set(vec(i, 0), i * dim));
    await client.upsert('rec', all, v0, all.map((i) => ({ id: i, v: 0 })));
    for (const i of all) acked.set(i, 0);
    await waitState(client, 'rec', [IndexState.TRAINED]);
    for (let cycle = 0; cycle < CYCLES_R; cycle++) {
      const writers = await Promise.all([0, 1].map(() => IndexClient.connect(cluster.discovery, { callTimeoutMs: 10_000 })));
      let stop = false;
      // Writer w owns the ids congruent to w mod 2, so its operations on an id are ordered.
      const work = writers.map(async (w, wi) => {
        while (!stop) {
          const ids = Array.from({ length: 10 }, () => 2 * Math.floor(rand() * (IDS / 2)) + wi).filter((x, i, a) => a.indexOf(x) === i);
          const del = rand() < 0.3;
          const v = ++version;
          for (const i of ids) maybe.set(i, del ? -1 : v);
          try {
            if (del) {
              await w.delete('rec', ids);
            } else {
              const vs = new Float32Array(ids.length * dim);
              ids.forEach((i, j) => vs.set(vec(i, v), j * dim));
              await w.upsert('rec', ids, vs, ids.map((i) => ({ id: i, v })));
            }
          } catch {
            return; // unacknowledged: each id is in its old or its new state
          }
          for (const i of ids) {
            acked.set(i, del ? -1 : v);
            maybe.delete(i);
          }
        }
      });
      const side = (async () => {
        while (!stop) {
          await new Promise((r) => setTimeout(r, 30 + rand() * 60));
          try {
            await (rand() < 0.5 ? client.saveIndex('rec') : client.compact('rec'));
          } catch {
            return;
          }
        }
      })();
      await new Promise((r) => setTimeout(r, 100 + rand() * 300));
      await cluster.kill(cycle % 2, 'SIGKILL');
      stop = true;
      await Promise.all([...work, side]);
      await Promise.all([...writers, client].map((c) => c.close()));
      await cluster.start(cycle % 2, ['--load-index']);
      client = await IndexClient.connect(cluster.discovery, { callTimeoutMs: 10_000 });
      await waitState(client, 'rec', [IndexState.TRAINED]);
      // Every id: its acknowledged state, or the unacknowledged one that was under way. One version, never two.
      const got = await client.get('rec', all);
      const state = new Map<number, number>(all.map((i) => [i, -1]));
      for (const r of got.records) state.set(r.id as number, (r.metadata as { v: number }).v);
      for (const i of all) {
        const s = state.get(i)!;
        const ok = s === acked.get(i) || (maybe.has(i) && s === maybe.get(i));
        assert.ok(ok, `cycle ${cycle}: id ${i} is in state ${s}, acknowledged ${acked.get(i)}, in flight ${maybe.get(i)}`);
        acked.set(i, s);
      }
      maybe.clear();
      const listed: number[] = [];
      for await (const page of client.iterate('rec', { batchSize: 128, returnEmbeddings: false })) listed.push(...page.records.map((r) => r.id as number));
      assert.equal(new Set(listed).size, listed.length, `cycle ${cycle}: an id listed twice`);
      assert.equal(listed.length, [...state.values()].filter((s) => s >= 0).length);
      // Search agrees with the records: every live record found by its own vector, as itself, once.
      const live = all.filter((i) => state.get(i)! >= 0).slice(0, 20);
      const qs = new Float32Array(live.length * dim);
      live.forEach((i, j) => qs.set(vec(i, state.get(i)!), j * dim));
      await waitIndexedTotal(client, 'rec', listed.length);
      const hits = await client.search('rec', qs, 3);
      live.forEach((i, j) => {
        assert.equal(hits.ids![j]![0], i, `cycle ${cycle}: record ${i} (v${state.get(i)}) not its own nearest neighbour: ${JSON.stringify(hits.ids![j])} ${JSON.stringify(hits.scores[j])} ${JSON.stringify(hits.metadata[j])}`);
        assert.equal(hits.ids![j]!.filter((x) => x === i).length, 1, `cycle ${cycle}: record ${i} returned twice`);
        assert.deepEqual(hits.metadata[j]![0], { id: i, v: state.get(i) });
      });
    }
    await client.close();
  } finally {
    await cluster.stop();
  }
});

async function waitIndexedTotal(client: IndexClient, id: string, want: number): Promise<void> {
  const end = Date.now() + 30_000;
  while ((await client.getNtotal(id)) !== want) {
    if (Date.now() > end) throw new Error(`ntotal ${await client.getNtotal(id)}, want ${want}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
