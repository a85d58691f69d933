// A client process for the durable-revocation test: adds batches (metadata [batch, row]) to
// index 'mv' until one had to move because its server died holding it, prints
// "moved <batches>" and SIGKILLs itself at once, before it could deliver the revocation.
import { IndexClient } from '../../src/index.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';

const [discovery, rowsArg] = process.argv.slice(2);
const ROWS = Number(rowsArg);
const dim = 8;
const data = new SyntheticDataset({ dim, seed: 33 });
const client = await IndexClient.connect(discovery!, { reconnectIntervalMs: 60_000, callTimeoutMs: 10_000 });
for (let b = 0; b < 50; b++) {
  await client.addIndexData('mv', data.base(ROWS, b * ROWS), Array.from({ length: ROWS }, (_, i) => [b, i]));
  if (client.pendingRevocations.length > 0) {
    process.stdout.write(`moved ${b + 1}\n`, () => process.kill(process.pid, 'SIGKILL'));
    await new Promise(() => {});
  }
}
process.stdout.write('never moved\n');
