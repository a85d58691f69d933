/**
 * Filtered-search bench (issue 17): the server-side declarative filter against today's
 * client-side searchWithFilter, per index type and selectivity; the payload index's gain;
 * and the crossover between the exact subset search and FAISS's selector walk.
 *
 *   npm run bench -- --filters [--quick] [--kinds flat,ivf,hnswsq] [--no-crossover] [--out DIR]
 *
 * Cluster part: 2 fresh `dfaiss server` processes (1 thread each), one IndexClient,
 * SyntheticDataset dim 32, N records (200k; --quick 50k) with integer ids and metadata
 * { b: i % 10000 } (b sets the selectivity: b < 5000 is 50%, b < 500 5%, b < 50 0.5%, b = 7
 * 0.01%; 0.01% of 50k is 5 records). Per cell, batch-1 queries one after another (up to 200,
 * at most ~8 s): QPS, recall@10 against the exact filtered top-10 (brute force here), and the
 * bytes the client sent and received per query (its sockets' counters). Every index has a
 * payload index on b; the client-side filter runs the same query with `where: m => m.b < ...`.
 * The payload index's gain: Flat once more without it.
 * Crossover part (in process, 100k x 16, 1 thread): searchSubset vs searchSelected per
 * match count, the numbers behind exactSearchLimit (src/shard/filtered-search.ts).
 * Written: bench/results/filters-{quick,full}.{json,md} and filter-crossover.txt.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { IndexClient } from '../../dist/client/index-client.js';
import { exactSearch } from '../../dist/datasets/exact.js';
import { SyntheticDataset, prng } from '../../dist/datasets/synthetic.js';
import { Bits, type Filter } from '../../dist/filter/index.js';
import { FaissIndex, setOmpNumThreads } from '../../dist/native/index.js';
import { startCluster } from './cluster.js';
import { nowMs } from './stats.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const DIM = 32;
const K = 10;
const SERVERS = 2;
const MAX_QUERIES = 200;
const CELL_MS = 8000;

type Kind = 'flat' | 'ivf' | 'hnswsq';
const CFG: Record<Kind, Record<string, unknown>> = {
  flat: { indexBuilderType: 'flat' },
  ivf: { indexBuilderType: 'ivf_simple', centroids: 512, nprobe: 8 },
  hnswsq: { indexBuilderType: 'hnswsq', nprobe: 64, storeN: 16, efConstruction: 40 },
};
const SELECTIVITIES: Array<{ name: string; filter: Filter; admits: (b: number) => boolean }> = [
  { name: '50%', filter: { b: { $lt: 5000 } }, admits: (b) => b < 5000 },
  { name: '5%', filter: { b: { $lt: 500 } }, admits: (b) => b < 500 },
  { name: '0.5%', filter: { b: { $lt: 50 } }, admits: (b) => b < 50 },
  { name: '0.01%', filter: { b: 7 }, admits: (b) => b === 7 },
];

export interface FilterCell {
  kind: Kind | 'flat, no payload index';
  selectivity: string;
  how: 'server filter' | 'client searchWithFilter';
  queries: number;
  qps: number;
  recallAt10: number;
  /** Share of queries with fewer than 10 hits (10 matches always exist here). */
  shortShare: number;
  bytesPerQuery: number;
}

/** Every socket this process opens (the client's connections), for their byte counters. */
const sockets = new Set<net.Socket>();
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
  sockets.add(this);
  return (connect as (...a: unknown[]) => net.Socket).apply(this, args);
} as typeof connect;

/** Bytes the client sent and received so far, over every connection. */
function wireBytes(): number {
  let total = 0;
  for (const s of sockets) total += s.bytesRead + s.bytesWritten;
  return total;
}

async function fill(client: IndexClient, id: string, cfg: Record<string, unknown>, base: Float32Array, n: number): Promise<void> {
  await client.createIndex(id, { dim: DIM, metric: 'l2', trainNum: Math.min(n, 50_000), ...cfg });
  for (let i = 0; i < n; i += 10_000) {
    const m = Math.min(10_000, n - i);
    await client.addIndexData(id, base.subarray(i * DIM, (i + m) * DIM), Array.from({ length: m }, (_, j) => ({ b: (i + j) % 10_000 })), { ids: Array.from({ length: m }, (_, j) => i + j) });
  }
  await client.trainingSettled(id);
  await client.syncTrain(id);
  while ((await client.getNtotal(id)) !== n) await new Promise((r) => setTimeout(r, 50));
}

async function measure(
  queries: Float32Array,
  exact: number[][],
  run: (q: Float32Array) => Promise<{ ids?: Array<Array<unknown>> }>,
): Promise<Omit<FilterCell, 'kind' | 'selectivity' | 'how'>> {
  const nq = queries.length / DIM;
  await run(queries.subarray(0, DIM)); // warm-up (payload index catch-up, IVF direct map)
  let found = 0;
  let short = 0;
  let done = 0;
  const bytes0 = wireBytes();
  const t0 = nowMs();
  for (; done < Math.min(nq, MAX_QUERIES) && (done < 3 || nowMs() - t0 < CELL_MS); done++) {
    const r = await run(queries.subarray(done * DIM, (done + 1) * DIM));
    const row = (r.ids?.[0] ?? []) as number[];
    if (row.length < Math.min(K, exact[done]!.length)) short++;
    found += row.filter((id) => exact[done]!.includes(id)).length;
  }
  const ms = nowMs() - t0;
  const wanted = exact.slice(0, done).reduce((a, e) => a + e.length, 0);
  return { queries: done, qps: (done * 1000) / ms, recallAt10: found / wanted, shortShare: short / done, bytesPerQuery: (wireBytes() - bytes0) / done };
}

export async function runFiltersBench(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const kindsArg = argv.includes('--kinds') ? argv[argv.indexOf('--kinds') + 1] : undefined;
  const kinds = (kindsArg ? kindsArg.split(',') : ['flat', 'ivf', 'hnswsq']) as Kind[];
  const out = argv.includes('--out') ? argv[argv.indexOf('--out') + 1]! : join(REPO, 'bench', 'results');
  const n = quick ? 50_000 : 200_000;
  const log = (m: string): void => void process.stderr.write(`[bench filters ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const data = new SyntheticDataset({ dim: DIM, seed: 5 });
  const base = data.base(n);
  const queries = data.queries(MAX_QUERIES);
  const load0 = loadavg()[0]!;
  // Exact filtered top-10 per selectivity (brute force over the admitted rows).
  const exact = new Map<string, number[][]>();
  for (const s of SELECTIVITIES) {
    const keep = Array.from({ length: n }, (_, i) => i).filter((i) => s.admits(i % 10_000));
    const rows = new Float32Array(keep.length * DIM);
    keep.forEach((i, j) => rows.set(base.subarray(i * DIM, (i + 1) * DIM), j * DIM));
    const r = exactSearch(rows, queries, DIM, K, 'l2');
    exact.set(s.name, Array.from({ length: MAX_QUERIES }, (_, q) => Array.from(r.labels.subarray(q * K, (q + 1) * K)).filter((l) => l >= 0n).map((l) => keep[Number(l)]!)));
  }
  const cells: FilterCell[] = [];
  const cluster = await startCluster(SERVERS, { threads: 1 });
  const client = await IndexClient.connect(cluster.discovery);
  try {
    // Every kind with a payload index on b; Flat once more without it (the payload index's gain).
    const cases: Array<{ kind: FilterCell['kind']; cfg: Record<string, unknown>; clientSide: boolean }> = [
      ...kinds.map((k) => ({ kind: k, cfg: { ...CFG[k], indexedFields: ['b'] }, clientSide: true })),
      ...(kinds.includes('flat') ? [{ kind: 'flat, no payload index' as const, cfg: CFG.flat, clientSide: false }] : []),
    ];
    for (const c of cases) {
      const id = `bf-${c.kind.replace(/[^a-z]/g, '')}`;
      log(`${c.kind}: loading ${n} records`);
      await fill(client, id, c.cfg, base, n);
      for (const s of SELECTIVITIES) {
        const want = exact.get(s.name)!;
        const server = await measure(queries, want, (q) => client.search(id, q, K, { filter: s.filter }));
        cells.push({ kind: c.kind, selectivity: s.name, how: 'server filter', ...server });
        log(`${c.kind} ${s.name} server: ${server.qps.toFixed(1)} QPS, recall ${server.recallAt10.toFixed(3)}, ${Math.round(server.bytesPerQuery)} B/query`);
        if (!c.clientSide) continue;
        const where = (m: unknown) => s.admits((m as { b: number }).b);
        const cs = await measure(queries, want, (q) => client.searchWithFilter(id, q, K, { where }));
        cells.push({ kind: c.kind, selectivity: s.name, how: 'client searchWithFilter', ...cs });
        log(`${c.kind} ${s.name} client: ${cs.qps.toFixed(1)} QPS, recall ${cs.recallAt10.toFixed(3)}, ${Math.round(cs.bytesPerQuery)} B/query`);
      }
      await client.dropIndex(id);
    }
  } finally {
    await client.close();
    await cluster.stop();
  }
  log('crossover (in process)');
  const crossover = argv.includes('--no-crossover') ? '' : await measureCrossover();
  const load1 = loadavg()[0]!;
  mkdirSync(out, { recursive: true });
  const name = `filters-${quick ? 'quick' : 'full'}`;
  const md = markdown(cells, n, load0, load1);
  writeFileSync(join(out, `${name}.json`), `${JSON.stringify({ createdAt: new Date().toISOString(), servers: SERVERS, dim: DIM, n, k: K, loadAvg1m: [load0, load1], cells }, null, 2)}\n`);
  writeFileSync(join(out, `${name}.md`), md);
  if (crossover) writeFileSync(join(out, 'filter-crossover.txt'), crossover);
  process.stdout.write(md + '\n' + crossover);
}

function markdown(cells: FilterCell[], n: number, load0: number, load1: number): string {
  const lines = [
    `# Filtered search: server-side filter vs client-side searchWithFilter`,
    '',
    `${new Date().toISOString().slice(0, 10)}; ${SERVERS} servers x 1 thread on this 2-core machine, ${n.toLocaleString('en')} records x ${DIM}-d (SyntheticDataset), k = ${K}, batch-1 queries one after another;`,
    `1-minute load average ${load0.toFixed(1)} at the start and ${load1.toFixed(1)} at the end (the machine is shared with other sessions: QPS are indicative).`,
    'Bytes: what the client sent and received per query (all servers). Short: share of queries with fewer than min(10, matches) hits. Every index has a payload index on the filtered field unless it says otherwise.',
    '',
    '| index | selectivity | how | QPS | recall@10 | short | bytes / query |',
    '|---|---|---|---:|---:|---:|---:|',
  ];
  for (const c of cells) {
    lines.push(`| ${c.kind} | ${c.selectivity} | ${c.how} | ${c.qps.toFixed(1)} | ${c.recallAt10.toFixed(3)} | ${(c.shortShare * 100).toFixed(0)}% | ${Math.round(c.bytesPerQuery).toLocaleString('en')} |`);
  }
  return `${lines.join('\n')}\n`;
}

/** searchSubset vs searchSelected (at the width the shard would start with) per match count. */
async function measureCrossover(): Promise<string> {
  setOmpNumThreads(1);
  const dim = 16;
  const n = 100_000;
  const data = new SyntheticDataset({ dim, seed: 3 }).base(n);
  const out: string[] = [`# exact subset search vs selector walk, ${n} x ${dim}, k = ${K}, 1 thread, ms per call (mean of 5); load ${loadavg()[0]!.toFixed(1)}`];
  for (const nq of [1, 10]) {
    const queries = data.slice(0, nq * dim).map((v) => v + 0.01);
    for (const f of ['Flat', 'IVF632,Flat', 'IVF632,SQfp16', 'HNSW32,SQ8']) {
      const index = FaissIndex.fromFactory(dim, f, 'l2');
      await index.train(data.subarray(0, 50_000 * dim));
      await index.add(data);
      out.push(`${f}, ${nq} quer${nq === 1 ? 'y' : 'ies'}:`);
      for (const m of [10, 100, 1000, 3000, 10_000, 30_000]) {
        const r = prng(m);
        const bits = new Bits(n);
        for (let i = 0; i < n; i++) if (r() < m / n) bits.set(i);
        const list = BigInt64Array.from(bits.toArray(), BigInt);
        const width = f.startsWith('IVF') ? { nprobe: Math.min(632, Math.max(1, Math.ceil((2 * K * 632) / list.length))) } : f.startsWith('HNSW') ? { efSearch: Math.min(16384, Math.max(64, Math.ceil((2 * K * n) / list.length))) } : undefined;
        const time = async (fn: () => Promise<unknown>) => {
          await fn();
          const t = nowMs();
          for (let i = 0; i < 5; i++) await fn();
          return (nowMs() - t) / 5;
        };
        const sub = await time(() => index.searchSubset(queries, K, list));
        const sel = await time(() => index.searchSelected(queries, K, bits.bytes, width));
        out.push(`  ${list.length} matches: subset ${sub.toFixed(2)} ms, selector ${sel.toFixed(2)} ms ${width ? JSON.stringify(width) : ''}`);
      }
    }
  }
  return `${out.join('\n')}\n`;
}
