// The README's client example, runnable as written: `node --import tsx examples/quickstart.ts`.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, IndexServer, IndexState } from 'dfaiss';

// Two index servers (normally separate processes: `dfaiss server` or `dfaiss launch`).
const dir = mkdtempSync(join(tmpdir(), 'dfaiss-quickstart-'));
const discovery = join(dir, 'discovery.txt');
writeFileSync(discovery, '2\n');
const servers = [new IndexServer(0, join(dir, 'data')), new IndexServer(1, join(dir, 'data'))];
for (const server of servers) await server.start({ port: 0, discoveryConfig: discovery });

const client = await IndexClient.connect(discovery);
await client.createIndex('docs', {
  indexBuilderType: 'ivf_simple',
  dim: 64,
  centroids: 16,
  trainNum: 1000, // training starts once the cluster has buffered 1000 vectors (trainMode 'shared')
  metric: 'l2',
  nprobe: 4,
});

// Batches of vectors with one metadata value per vector (any plain msgpack-able data).
const dim = 64;
for (let batch = 0; batch < 4; batch++) {
  const vectors = Float32Array.from({ length: 500 * dim }, (_, i) => Math.sin(batch * 500 * dim + i));
  const metadata = Array.from({ length: 500 }, (_, i) => ({ doc: `doc-${batch * 500 + i}`, batch }));
  await client.addIndexData('docs', vectors, metadata);
}

while ((await client.getState('docs')) !== IndexState.TRAINED) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
console.log('ntotal', await client.getNtotal('docs'));

const query = Float32Array.from({ length: dim }, (_, i) => Math.sin(1234 * dim + i));
const { scores, metadata } = await client.search('docs', query, 3);
console.log(metadata[0], scores[0]);

await client.close();
for (const server of servers) await server.stop();
