// Issue 12, defect 7: the original's semantics, against real servers. loadIndex(id, cfg,
// forceReload = true) applies cfg even to an index in memory; metadata None (null, as a
// list or per item) is accepted; binary metadata round-trips as Uint8Array; index ids such
// as "idx:1" (any printable id) are accepted, in encoded folders that stay inside the
// storage root, never collide, and load again after a restart.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { IndexClient, IndexState } from '../../src/index.js';
import { indexFolderName } from '../../src/server/paths.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 8;
const data = new SyntheticDataset({ dim, seed: 7 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: TestCluster;
let client: IndexClient;

before(async () => {
  cluster = await startCluster(2);
  client = await IndexClient.connect(cluster.discovery);
});

after(async () => {
  await client?.close();
  await cluster?.stop();
});

async function waitNtotal(id: string, n: number): Promise<void> {
  for (let i = 0; (await client.getNtotal(id)) < n; i++) {
    assert.ok(i < 500, `${id} reaches ntotal ${n}`);
    await sleep(20);
  }
}

async function trainNums(id: string): Promise<number[]> {
  return (await client.status()).map((s) => (s.indexes as Record<string, { trainNum: number }>)[id]!.trainNum);
}

/** Restarts both servers (SIGKILL) with --load-index and reconnects. */
async function restartAll(): Promise<void> {
  await client.close();
  for (const rank of [0, 1]) {
    await cluster.kill(rank);
    await cluster.start(rank, ['--load-index']);
  }
  client = await IndexClient.connect(cluster.discovery);
}

describe("the original's semantics (issue 12, defect 7)", () => {
  it('loadIndex applies cfg to an index in memory; forceReload defaults to true; the cfg is kept', async () => {
    // trainNum 1: searchable after the first add even where flat indexes still needed training.
    const cfg = { indexBuilderType: 'flat' as const, dim, metric: 'l2' as const, trainNum: 1 };
    await client.createIndex('lc', cfg);
    await client.addIndexData('lc', data.base(20, 0));
    await client.addIndexData('lc', data.base(20, 20));
    await waitNtotal('lc', 40);
    await client.saveIndex('lc');
    assert.deepEqual(await trainNums('lc'), [1, 1]);

    await client.loadIndex('lc', { ...cfg, trainNum: 7 }); // in memory, no forceReload given
    assert.deepEqual(await trainNums('lc'), [7, 7], 'cfg applied with the default forceReload');
    await client.loadIndex('lc', { ...cfg, trainNum: 9 }, false);
    assert.deepEqual(await trainNums('lc'), [9, 9], 'a different cfg is applied even without forceReload');
    await client.loadIndex('lc', null, false);
    await client.loadIndex('lc');
    assert.deepEqual(await trainNums('lc'), [9, 9], 'a load without cfg keeps the one given last');
    await waitNtotal('lc', 40);
    assert.equal(await client.getNtotal('lc'), 40, 'the data survived every reload');
    await restartAll();
    assert.deepEqual(await trainNums('lc'), [9, 9], 'and a restart');
    assert.equal(await client.getNtotal('lc'), 40);
  });

  it('metadata null (None) as a list and as items', async () => {
    await client.createIndex('none', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    await client.addIndexData('none', data.base(3, 0), null);
    await client.addIndexData('none', data.base(3, 3), [null, { a: 1 }, undefined]);
    await waitNtotal('none', 6);
    const r = await client.search('none', data.base(6, 0), 1);
    assert.deepEqual(r.metadata.map((row) => row[0]), [null, null, null, null, { a: 1 }, null]);
  });

  it('binary metadata comes back as Uint8Array, also after a restart', async () => {
    await client.createIndex('bin', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    const bin = [Uint8Array.of(1, 2, 3), { blob: Uint8Array.of(255, 0), tag: 'x' }, [Uint8Array.of(), 4]];
    await client.addIndexData('bin', data.base(3, 0), bin);
    await client.addIndexData('bin', data.base(3, 3), bin);
    await waitNtotal('bin', 6);
    const check = async (): Promise<void> => {
      const r = await client.search('bin', data.base(6, 0), 1);
      const got = r.metadata.map((row) => row[0]);
      assert.deepEqual(got.slice(0, 3), bin, 'binary values round-trip');
      assert.deepEqual(got.slice(3, 6), bin);
      assert.ok(got[0] instanceof Uint8Array && got[0].constructor === Uint8Array, 'a Uint8Array, not a Buffer view');
      assert.ok((got[1] as { blob: unknown }).blob instanceof Uint8Array);
    };
    await check();
    await restartAll(); // from the write-ahead log
    await check();
  });

  it('index ids such as idx:1: accepted, in encoded folders inside the storage root that never collide', async () => {
    const ids = ['idx:1', '..', '.', '../escaped', '/tmp/escaped', 'a/b', 'a\\b', '.hidden', '-flag', 'ok..no', 'é 1', 'a:1', 'a%3A1', 'plain_id-1.x'];
    const around = readdirSync(dirname(cluster.dir)).filter((n) => n.startsWith('escaped')).sort();
    const beside = readdirSync(cluster.dir).sort();
    for (const [i, id] of ids.entries()) {
      await client.createIndex(id, { indexBuilderType: 'flat', dim, metric: 'l2' });
      await client.addIndexData(id, data.base(1, i), [id]);
    }
    const folders = ids.map(indexFolderName);
    assert.equal(new Set(folders).size, ids.length, 'every id has its own folder');
    assert.equal(indexFolderName('plain_id-1.x'), 'plain_id-1.x', 'ids valid before keep their folder names');
    const root = readdirSync(cluster.saveDir);
    for (const f of folders) {
      assert.ok(root.includes(f), `folder ${f} directly under the storage root`);
      assert.ok(existsSync(join(cluster.saveDir, f, '0', 'cfg.json')));
    }
    assert.deepEqual(readdirSync(cluster.dir).sort(), beside, 'nothing created beside the storage root');
    assert.deepEqual(readdirSync(dirname(cluster.dir)).filter((n) => n.startsWith('escaped')).sort(), around);
    assert.ok(!existsSync('/tmp/escaped'));

    await restartAll(); // --load-index finds every index by its decoded id
    const listed = new Set((await client.status()).flatMap((s) => Object.keys(s.indexes as object)));
    for (const [i, id] of ids.entries()) {
      assert.ok(listed.has(id), `${JSON.stringify(id)} loaded again`);
      assert.equal(await client.getState(id), IndexState.TRAINED);
      assert.deepEqual((await client.search(id, data.base(1, i), 1)).metadata, [[id]], `${JSON.stringify(id)} holds its own vector`);
    }
    await client.dropIndex('idx:1');
    assert.equal(await client.getNtotal('idx:1'), 0);
    assert.equal(await client.getNtotal('a:1'), 1, 'dropping one id leaves the others');
  });
});
