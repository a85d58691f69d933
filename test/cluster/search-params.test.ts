// Issue 12, defect 4: every search parameter is validated, in the client and in the server
// (real processes), against the index type's table (src/config/search-params.ts): a
// ValidationError naming the parameter and its range, and the index stays searchable.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient, IndexState, ValidationError } from '../../src/index.js';
import { RpcClient } from '../../src/protocol/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { startCluster, type TestCluster } from '../helpers/cluster.js';

const dim = 8;
const NLIST = 4;
const data = new SyntheticDataset({ dim, seed: 12 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: TestCluster;
let client: IndexClient;
let raw: RpcClient[];

async function rejects(p: Promise<unknown>, field: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ValidationError, `a ValidationError, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.equal(e.field, field);
    assert.match(e.message, message);
    return true;
  });
}

async function waitTrained(id: string, ntotal: number): Promise<void> {
  for (let i = 0; (await client.getState(id)) !== IndexState.TRAINED || (await client.getNtotal(id)) < ntotal; i++) {
    assert.ok(i < 500, `${id} becomes searchable`);
    await sleep(20);
  }
}

/** Every query still finds hits on every server (nothing broke the index). */
async function stillSearchable(id: string): Promise<void> {
  const r = await client.search(id, data.base(3, 0), 5);
  for (const row of r.scores) assert.equal(row.length, 5, `${id} answers 5 hits`);
}

before(async () => {
  cluster = await startCluster(2);
  client = await IndexClient.connect(cluster.discovery);
  raw = await Promise.all(cluster.servers.map((s) => RpcClient.connect('127.0.0.1', s.port)));
  await client.createIndex('ivf', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: NLIST, trainNum: 100 });
  await client.createIndex('hnsw', { faissFactory: 'HNSW16', dim, metric: 'l2' });
  await client.createIndex('pq', { faissFactory: 'IVF{centroids},PQ4x4np', dim, metric: 'l2', centroids: NLIST, trainNum: 200 });
  await client.createIndex('flat', { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
  for (const id of ['ivf', 'hnsw', 'pq', 'flat']) {
    for (let b = 0; b < 4; b++) await client.addIndexData(id, data.base(100, b * 100), undefined, { trainAsync: false });
  }
  await client.syncTrain('hnsw').catch(() => {}); // older servers needed it for HNSW; a no-op now
  for (const id of ['ivf', 'hnsw', 'pq', 'flat']) await waitTrained(id, 400);
});

after(async () => {
  await Promise.allSettled(raw?.map((r) => r.close()) ?? []);
  await client?.close();
  await cluster?.stop();
});

describe('search parameters are validated (issue 12, defect 4)', () => {
  it('nprobe must be an integer from 1 to nlist, in the client and in every server', async () => {
    for (const bad of [-1, 0, 1e12, 2.5, NLIST + 1]) {
      await rejects(client.setNprobe('ivf', bad), 'nprobe', /an integer from 1 to 4/);
      await rejects(client.setSearchParameter('ivf', 'nprobe', bad), 'nprobe', /from 1 to 4/);
      // The server checks too (a client of another language, or an older one).
      for (const r of raw) await rejects(r.call('setSearchParameter', { indexId: 'ivf', name: 'nprobe', value: bad }), 'nprobe', /from 1 to 4: IVF lists probed per query \(the index has 4\)/);
      await stillSearchable('ivf');
    }
    await client.setNprobe('ivf', NLIST);
    await stillSearchable('ivf');
  });

  it('names the index type does not have are refused with the list it has', async () => {
    await rejects(client.setSearchParameter('ivf', 'efSearch', 16), 'name', /index_builder_type 'ivf_simple': nprobe, max_codes/);
    await rejects(raw[0]!.call('setSearchParameter', { indexId: 'ivf', name: 'ht', value: 3 }), 'name', /nprobe, max_codes/);
    await rejects(client.setNprobe('hnsw', 4), 'name', /faiss_factory "HNSW16": efSearch, efConstruction/);
    await rejects(client.setSearchParameter('flat', 'nprobe', 4), 'name', /has none \(an exact search\)/);
    await rejects(raw[1]!.call('setSearchParameter', { indexId: 'flat', name: 'efSearch', value: 4 }), 'name', /has none/);
    for (const id of ['ivf', 'hnsw', 'flat']) await stillSearchable(id);
  });

  it('HNSW efSearch, IVF max_codes and PQ ht: integers in range', async () => {
    for (const bad of [0, -3, 1.5, 1e12]) await rejects(client.setSearchParameter('hnsw', 'efSearch', bad), 'efSearch', /an integer from 1 to 1048576/);
    for (const r of raw) await rejects(r.call('setSearchParameter', { indexId: 'hnsw', name: 'efSearch', value: 0 }), 'efSearch', /from 1 to/);
    await client.setSearchParameter('hnsw', 'efSearch', 32);
    await stillSearchable('hnsw');

    await rejects(client.setSearchParameter('ivf', 'max_codes', -1), 'max_codes', /an integer from 0/);
    await client.setSearchParameter('ivf', 'max_codes', 0);

    await rejects(client.setSearchParameter('pq', 'ht', -1), 'ht', /an integer from 0 to 65536/);
    await rejects(raw[0]!.call('setSearchParameter', { indexId: 'pq', name: 'ht', value: 0.5 }), 'ht', /an integer/);
    await client.setSearchParameter('pq', 'ht', 12);
    await rejects(client.setNprobe('pq', 0), 'nprobe', /from 1 to 4/);
    for (const id of ['ivf', 'hnsw', 'pq']) await stillSearchable(id);
    for (const s of cluster.servers) assert.equal(s.proc.exitCode, null, `server ${s.rank} still runs`);
  });

  it('before training, nprobe is bounded by the configured list count (or the documented cap when inferred)', async () => {
    await client.createIndex('fresh', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', centroids: 8, trainNum: 1000 });
    await rejects(client.setNprobe('fresh', 9), 'nprobe', /from 1 to 8/);
    await client.setNprobe('fresh', 8);
    await client.createIndex('inferred', { indexBuilderType: 'ivf_simple', dim, metric: 'l2', trainNum: 1000 });
    await rejects(client.setNprobe('inferred', 1e12), 'nprobe', /from 1 to 1048576: .*not known before training/);
    for (const r of raw) await rejects(r.call('setSearchParameter', { indexId: 'inferred', name: 'nprobe', value: 0 }), 'nprobe', /from 1 to 1048576/);
    await client.setNprobe('inferred', 2);
    await client.dropIndex('fresh');
    await client.dropIndex('inferred');
  });
});
