// Where a 768-d fp16 load's server RSS goes (issue 14 item 4): S servers, one index, N x 768
// float16 rows sent in batches while the index waits for its shared training; each server's
// VmRSS, RssAnon and the rows it buffers (status) are sampled every 200 ms.
// node bench/scripts/server-memory-768.mjs --rows 120000 --servers 2 --type ivfsq --train 40000 [--max-buffered-mb N]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient, LocalCluster, IndexState } from '../../dist/index.js';

const arg = (k, d) => { const i = process.argv.indexOf(k); return i < 0 ? d : process.argv[i + 1]; };
const rows = Number(arg('--rows', 120000)), S = Number(arg('--servers', 2)), type = arg('--type', 'ivfsq');
const trainNum = Number(arg('--train', 40000)), bound = arg('--max-buffered-mb'), dim = 768, batch = 5000;
const dir = mkdtempSync(join(tmpdir(), 'mem768-'));
const cluster = new LocalCluster({ numServers: S, saveDir: join(dir, 'data'), discoveryConfig: join(dir, 'disc'), threadsPerServer: 1, serverLogs: 'capture',
  serverArgs: bound === undefined ? [] : ['--max-buffered-mb', bound] });
const servers = await cluster.start();
const kb = (pid, file, key) => { const m = readFileSync(`/proc/${pid}/${file}`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+)`, 'm')); return m ? Number(m[1]) / 1024 : NaN; };
const peak = servers.map(() => ({ rss: 0, anon: 0, bufferedMiB: 0, atPeakBuffered: 0, rows: 0 }));
const client = await IndexClient.connect(join(dir, 'disc'));
const cfg = type === 'knnlm' ? { indexBuilderType: 'knnlm', dim, centroids: 256, codeSize: 64, trainNum, trainMode: 'shared', metric: 'l2' }
  : { indexBuilderType: type, dim, centroids: 256, trainNum, trainMode: 'shared', metric: 'l2' };
await client.createIndex('m', cfg);
let done = false;
const sampler = (async () => {
  while (!done) {
    const st = await client.status().catch(() => []);
    servers.forEach((s, i) => {
      const rss = kb(s.pid, 'status', 'VmRSS'), anon = kb(s.pid, 'status', 'RssAnon');
      const buffered = st[i]?.indexes?.m?.buffered ?? 0;
      const buf = (buffered * dim * 4) / 2 ** 20;
      const p = peak[i];
      if (rss > p.rss) { p.rss = rss; p.atPeakBuffered = buf; }
      p.anon = Math.max(p.anon, anon); p.bufferedMiB = Math.max(p.bufferedMiB, buf); p.rows = Math.max(p.rows, buffered);
    });
    await new Promise((r) => setTimeout(r, 200));
  }
})();
// Deterministic clustered-ish data as float16 (the fp16 bits of small floats).
const fb = new Float32Array(1), ub = new Uint32Array(fb.buffer);
const f2h = (f) => { fb[0] = f; const u = ub[0]; const s = (u >>> 16) & 0x8000; let e = ((u >>> 23) & 0xff) - 127 + 15; const m = (u >>> 13) & 0x3ff; if (e <= 0) return s; return s | (e << 10) | m; };
const t0 = Date.now();
for (let b = 0; b < rows; b += batch) {
  const n = Math.min(batch, rows - b);
  const v = new Uint16Array(n * dim);
  for (let i = 0; i < v.length; i++) v[i] = f2h(Math.sin((b * dim + i) * 0.618) * 0.5 + (((b + i / dim) | 0) % 16) * 0.1);
  await client.addIndexData('m', v, null);
}
const sent = (Date.now() - t0) / 1000;
for (let i = 0; i < 3000 && ((await client.getState('m')) !== IndexState.TRAINED || (await client.getNtotal('m')) < rows); i++) await new Promise((r) => setTimeout(r, 200));
const total = (Date.now() - t0) / 1000;
await new Promise((r) => setTimeout(r, 600));
const after = servers.map((s) => ({ rss: kb(s.pid, 'status', 'VmRSS'), anon: kb(s.pid, 'status', 'RssAnon') }));
done = true; await sampler;
console.log(JSON.stringify({ rows, S, type, trainNum, bound: bound ?? 'default', sentS: sent, searchableS: total, ntotal: await client.getNtotal('m'),
  perServer: peak.map((p, i) => ({ peakRssMiB: +p.rss.toFixed(0), peakAnonMiB: +p.anon.toFixed(0), maxBufferedRows: p.rows, maxBufferedF32MiB: +p.bufferedMiB.toFixed(0), bufferedAtPeakMiB: +p.atPeakBuffered.toFixed(0), endRssMiB: +after[i].rss.toFixed(0) })) }));
await client.close(); await cluster.stop(); rmSync(dir, { recursive: true, force: true });
