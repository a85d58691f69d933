/**
 * Disk use per input byte (issue 14, item 3): 4 fresh servers load float16 vectors (sent as
 * float16, logged as float16) with String(row) metadata into flat, ivfsq and knnlm indexes
 * (shared training), then saveIndex; the servers' folder is measured (st_blocks) after the
 * load and after the save, against the bytes sent (float16 vectors + packed metadata).
 *
 *   node bench/dist/disk.js [--n N] [--dim D] [--kinds flat,ivfsq,knnlm]
 */
import { loadavg } from 'node:os';
import { IndexClient } from '../../dist/client/index-client.js';
import type { IndexCfg } from '../../dist/config/index.js';
import { prng } from '../../dist/util/random.js';
import { startCluster } from './cluster.js';
import { diskBytes } from './proc.js';
import { sleep } from './stats.js';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const n = Number(arg('--n', '40000'));
const dim = Number(arg('--dim', '768'));
const kinds = arg('--kinds', 'flat,ivfsq,knnlm').split(',');
const batch = 5000;

/** float32 -> IEEE half bits (round to nearest), for values in [0, 1). */
function toHalf(v: number): number {
  if (v < 2 ** -14) return Math.round(v / 2 ** -24);
  const e = Math.floor(Math.log2(v));
  const m = Math.round((v / 2 ** e - 1) * 1024);
  return m === 1024 ? (e + 16) << 10 : ((e + 15) << 10) | m;
}

const r = prng(768);
const half = Uint16Array.from({ length: n * dim }, () => toHalf(r()));
const meta = Array.from({ length: n }, (_, i) => String(i));
const inputBytes = half.byteLength + meta.reduce((a, m) => a + Buffer.byteLength(m) + 1, 0);
const cfgs: Record<string, Partial<IndexCfg>> = {
  flat: { indexBuilderType: 'flat', dim, metric: 'dot' },
  ivfsq: { indexBuilderType: 'ivfsq', dim, metric: 'dot', centroids: 256, nprobe: 16, trainNum: n / 4 },
  knnlm: { indexBuilderType: 'knnlm', dim, metric: 'dot', centroids: 256, nprobe: 16, trainNum: n / 4 },
};
const rows: string[] = [];
for (const kind of kinds) {
  const cluster = await startCluster(4, { threads: 1 });
  try {
    const client = await IndexClient.connect(cluster.discovery);
    try {
      await client.createIndex(kind, cfgs[kind]!);
      await Promise.all(Array.from({ length: n / batch }, (_, b) => client.addIndexData(kind, half.subarray(b * batch * dim, (b + 1) * batch * dim), meta.slice(b * batch, (b + 1) * batch))));
      for (;;) {
        const st = await client.status();
        const infos = st.map((s) => (s.indexes as Record<string, { state: string; ntotal: number }>)[kind]!);
        if (infos.every((i) => i.state === 'TRAINED') && infos.reduce((a, i) => a + i.ntotal, 0) === n) break;
        await sleep(50);
      }
      await sleep(3000); // the post-training snapshot
      const loaded = diskBytes(cluster.dir);
      await client.saveIndex(kind);
      const saved = diskBytes(cluster.dir);
      rows.push(`| ${kind} | ${(loaded / inputBytes).toFixed(2)} | ${(saved / inputBytes).toFixed(2)} |`);
      console.error(`${kind}: ${(loaded / 2 ** 20).toFixed(1)} MiB after the load, ${(saved / 2 ** 20).toFixed(1)} MiB after saveIndex, input ${(inputBytes / 2 ** 20).toFixed(1)} MiB`);
    } finally {
      await client.close();
    }
  } finally {
    await cluster.stop();
  }
}
console.log(`${n} x ${dim} float16, String(row) metadata, 4 servers, shared training on ${n / 4}; load ${loadavg().map((v) => v.toFixed(2)).join(' ')}\n`);
console.log('| index | disk / input after the load | after saveIndex |\n|---|---:|---:|');
console.log(rows.join('\n'));
