// Issue 12, defect 6: index types FAISS builds trained (Flat, HNSW-Flat, IDMap,Flat) are
// TRAINED from creation with the default trainNum 0, searchable after their first add,
// and syncTrain / asyncTrain on them are no-ops; a restart keeps them TRAINED.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 8;
const ROWS = 30;
const data = new SyntheticDataset({ dim, seed: 66 });
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

const TYPES = [
  ['flat', { indexBuilderType: 'flat' as const }],
  ['hnsw-flat', { faissFactory: 'HNSW16' }],
  ['idmap-flat', { faissFactory: 'IDMap,Flat' }],
] as const;

describe('indexes that need no training (issue 12, defect 6)', () => {
  for (const [id, type] of TYPES) {
    it(`${id}: TRAINED at creation, searchable after the first add, syncTrain a no-op`, async () => {
      await client.createIndex(id, { ...type, dim, metric: 'l2' }); // trainNum: the default 0
      assert.equal(await client.getState(id), IndexState.TRAINED, 'TRAINED before any add');
      for (const s of await client.status()) {
        const info = (s.indexes as Record<string, { state: string; trainNum: number }>)[id]!;
        assert.equal(info.state, IndexState.TRAINED);
        assert.equal(info.trainNum, 0);
      }
      await client.addIndexData(id, data.base(ROWS, 0), Array.from({ length: ROWS }, (_, i) => ({ row: i })));
      await client.addIndexData(id, data.base(ROWS, ROWS), Array.from({ length: ROWS }, (_, i) => ({ row: ROWS + i })));
      // The README's loop: it must end without anyone calling syncTrain.
      let polls = 0;
      while ((await client.getState(id)) !== IndexState.TRAINED || (await client.getNtotal(id)) < 2 * ROWS) {
        assert.ok(++polls < 500, `${id} becomes searchable by itself`);
        await sleep(20);
      }
      assert.equal(await client.getNtotal(id), 2 * ROWS);
      const r = await client.search(id, data.base(1, 7), 3);
      assert.deepEqual(r.metadata[0]![0], { row: 7 }, 'the query vector itself is the best hit');
      assert.equal(r.scores[0]![0], 0);

      await client.syncTrain(id);
      await client.asyncTrain(id);
      assert.equal(await client.getState(id), IndexState.TRAINED);
      assert.equal(await client.getNtotal(id), 2 * ROWS, 'training again changed nothing');
      assert.deepEqual((await client.search(id, data.base(1, 7), 1)).metadata[0], [{ row: 7 }]);
    });
  }

  it('syncTrain on a flat index with an empty shard, and a restart of a never-filled flat index', async () => {
    await client.createIndex('empty-flat', { indexBuilderType: 'flat', dim, metric: 'l2' });
    await client.syncTrain('empty-flat'); // every shard empty: still a no-op, not "no vectors to train on"
    await client.addIndexData('empty-flat', data.base(5, 0)); // one shard gets it, the other stays empty
    await client.syncTrain('empty-flat');
    assert.equal(await client.getState('empty-flat'), IndexState.TRAINED);

    await client.createIndex('never-filled', { indexBuilderType: 'flat', dim, metric: 'l2' });
    await client.close();
    for (const rank of [0, 1]) {
      await cluster.kill(rank);
      await cluster.start(rank, ['--load-index']);
    }
    client = await IndexClient.connect(cluster.discovery);
    assert.equal(await client.getState('never-filled'), IndexState.TRAINED, 'TRAINED after a kill -9 and reload');
    assert.equal(await client.getState('flat'), IndexState.TRAINED);
    assert.equal(await client.getNtotal('flat'), 2 * ROWS, 'acknowledged vectors survive');
    await client.addIndexData('never-filled', data.base(4, 0), [1, 2, 3, 4]);
    for (let i = 0; (await client.getNtotal('never-filled')) < 4; i++) {
      assert.ok(i < 500, 'searchable after its first add');
      await sleep(20);
    }
    assert.deepEqual((await client.search('never-filled', data.base(1, 2), 1)).metadata, [[3]]);
  });
});
