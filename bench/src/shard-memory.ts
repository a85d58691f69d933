/**
 * Where a shard's memory goes, without a server around it: feeds a Shard the server's way
 * (an owned copy of each 5000-row batch plus packed metadata) until 125k x 128 are indexed,
 * then prints private memory (RssAnon) and V8's ArrayBuffer total before and after a full
 * GC. Needs --expose-gc:
 *
 *   node --expose-gc bench/dist/shard-memory.js flat|ivf
 *   MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=1048576 node --expose-gc bench/dist/shard-memory.js ivf
 *
 * This process also holds the 61 MiB source data (the first line shows the baseline).
 */
process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
const { readFileSync } = await import('node:fs');
const { Shard } = await import('../../dist/shard/shard.js');
const { defaultIndexCfg } = await import('../../dist/config/index.js');
const { SyntheticDataset } = await import('../../dist/datasets/synthetic.js');
const { encodeMetadata } = await import('../../dist/protocol/metadata.js');
const { setOmpNumThreads } = await import('../../dist/native/index.js');

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');
const kind = process.argv[2] === 'ivf' ? 'ivf' : 'flat';
setOmpNumThreads(1);

const anonMiB = (): number => Number(/RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
const report = (label: string): void => {
  const m = process.memoryUsage();
  console.log(`${label.padEnd(34)} RssAnon ${anonMiB().toFixed(0).padStart(4)} MiB, V8 heapUsed ${(m.heapUsed / 2 ** 20).toFixed(0).padStart(3)} MiB, ArrayBuffers ${(m.arrayBuffers / 2 ** 20).toFixed(0).padStart(4)} MiB`);
};

const DIM = 128;
const N = 125_000;
const B = 5000;
const base = new SyntheticDataset({ dim: DIM, seed: 1234 }).base(N);
gc();
report('baseline (holds the 61 MiB source)');
const cfg = defaultIndexCfg(
  kind === 'flat'
    ? { indexBuilderType: 'flat', dim: DIM, metric: 'l2', trainNum: B }
    : { indexBuilderType: 'ivf_simple', dim: DIM, metric: 'l2', centroids: 1024, nprobe: 16, trainNum: N },
);
const shard = new Shard(cfg);
for (let b = 0; b < N / B; b++) {
  const vectors = base.slice(b * B * DIM, (b + 1) * B * DIM); // the server's owned copy
  const meta = encodeMetadata(Array.from({ length: B }, (_, i) => b * B + i), B);
  void shard.add(vectors, meta.blob, meta.offsets.slice());
}
report('all batches buffered');
while (shard.state !== 'TRAINED' || shard.info.ntotal < N) await new Promise((r) => setTimeout(r, 20));
await shard.idle();
report(`${kind}: indexed, before GC`);
gc();
await new Promise((r) => setTimeout(r, 100));
gc();
report(`${kind}: indexed, after GC`);
