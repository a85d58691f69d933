// A client process for tests of what survives a client: creates a shared-training IVF index,
// adds 4 x 1000 rows (trainNum 4000), then, by argv[3]: 'close' (what every ingest script
// does) or 'kill' (SIGKILLs itself right after the last add is acknowledged). Prints "added".
import { IndexClient } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';

const [discovery, mode] = process.argv.slice(2);
const dim = 32;
const data = new SyntheticDataset({ dim, seed: 7 });
const client = await IndexClient.connect(discovery!);
await client.createIndex('iv', { indexBuilderType: 'ivf_simple', dim, centroids: 64, trainNum: 4000, metric: 'l2' });
for (let b = 0; b < 4; b++) await client.addIndexData('iv', data.base(1000, b * 1000), Array.from({ length: 1000 }, (_, i) => b * 1000 + i));
process.stdout.write('added\n');
if (mode === 'kill') process.kill(process.pid, 'SIGKILL');
await client.close();
