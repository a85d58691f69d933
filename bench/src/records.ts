/**
 * Records bench (issue 16): add, upsert and delete throughput side by side, the cost of
 * compaction on Flat and IVF, and a mass delete (1,000,000 deletes on a 1,010,000-vector
 * index; --quick: 100,000 of 101,000) that must keep search exact and memory bounded.
 *
 *   npm run bench -- --records [--quick] [--kinds flat,ivf] [--out DIR]
 *
 * Per index kind, on 2 fresh `dfaiss server` processes (1 thread each, default durability:
 * WAL + fsync), one IndexClient, SyntheticDataset dim 64, batches of 10,000 records with
 * integer ids (the row number):
 *   1. add with ids: every row; vec/s until acknowledged, and until searchable (ntotal = n);
 *   2. upsert: 10% of the rows again (new metadata); rec/s, each call resolving once the new
 *      versions are searchable;
 *   3. compaction cost: delete 1% of the rows (tombstoned, no compaction yet: below the
 *      background threshold), then one explicit compact(); its remove_ids time;
 *   4. mass delete: every row but each 101st, batches of 10,000 (background compactions
 *      run meanwhile); rec/s, the compactions' count and time, search checked against an
 *      exact reference over the survivors, FAISS ntotal and server RSS after.
 * Written: bench/results/records-{quick,full}.json and .md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IndexClient } from '../../dist/client/index-client.js';
import { SyntheticDataset } from '../../dist/datasets/synthetic.js';
import { FaissIndex, setOmpNumThreads } from '../../dist/native/index.js';
import { startCluster, type BenchCluster } from './cluster.js';
import { nowMs, sleep } from './stats.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const DIM = 64;
const BATCH = 10_000;
const SERVERS = 2;

type Kind = 'flat' | 'ivf';

interface ShardStatus {
  ntotal: number;
  faissNtotal: number;
  awaitingCompaction: number;
  compactions: { count: number; removed: number; ms: number; lastMs: number };
}

export interface RecordsCase {
  kind: Kind;
  n: number;
  addVecPerSec: number;
  addSearchableVecPerSec: number;
  upserts: number;
  upsertRecPerSec: number;
  compaction: { deadVectors: number; faissNtotalBefore: number; ms: number; removed: number };
  massDelete: {
    /** Deletes in the mass-delete step. */
    deletes: number;
    /** Deletes on this index in all (the compaction step's included). */
    totalDeletes: number;
    deleteRecPerSec: number;
    /** Seconds from the first delete until FAISS holds only the survivors. */
    untilCompactedSeconds: number;
    backgroundCompactions: number;
    backgroundCompactionMs: number;
    survivors: number;
    faissNtotalAfter: number;
    searchExact: boolean;
    recallAt10: number;
  };
  rssMiB: { afterAdd: number[]; afterDeletes: number[]; peak: number[] };
  /** V8 heap in use per server (part of the RSS). */
  heapMiB: { afterAdd: number[]; afterDeletes: number[] };
}

async function heaps(client: IndexClient): Promise<number[]> {
  return (await client.status()).map((s) => mib((s as { heapBytes?: number }).heapBytes ?? 0));
}

const mib = (b: number): number => Math.round((b / 2 ** 20) * 10) / 10;

async function shardStatus(client: IndexClient, id: string): Promise<ShardStatus[]> {
  return (await client.status()).map((s) => (s.indexes as unknown as Record<string, ShardStatus>)[id]!);
}

async function until(what: string, fn: () => Promise<boolean>, ms = 3_600_000): Promise<void> {
  const end = nowMs() + ms;
  while (!(await fn())) {
    if (nowMs() > end) throw new Error(`bench: timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function runCase(kind: Kind, n: number, log: (m: string) => void): Promise<RecordsCase> {
  const ds = new SyntheticDataset({ dim: DIM, seed: 4321 });
  const base = ds.base(n);
  const queries = ds.queries(100);
  const cluster: BenchCluster = await startCluster(SERVERS, { threads: 1 });
  const client = await IndexClient.connect(cluster.discovery);
  try {
    const id = `rec-${kind}`;
    await client.createIndex(id, kind === 'flat' ? { indexBuilderType: 'flat', dim: DIM, metric: 'l2', trainNum: BATCH } : { indexBuilderType: 'ivf_simple', dim: DIM, metric: 'l2', centroids: 256, nprobe: 16, trainNum: Math.floor(n / 8), trainMode: 'shared' });
    cluster.startSampling();
    // 1. add with ids
    let t0 = nowMs();
    const adds: Promise<void>[] = [];
    for (let off = 0; off < n; off += BATCH) {
      const m = Math.min(BATCH, n - off);
      const ids = Array.from({ length: m }, (_, i) => off + i);
      adds.push(client.addIndexData(id, base.subarray(off * DIM, (off + m) * DIM), ids, { ids }));
    }
    await Promise.all(adds);
    const addS = (nowMs() - t0) / 1000;
    await until('searchable', async () => (await client.getNtotal(id)) === n);
    const addSearchableS = (nowMs() - t0) / 1000;
    log(`${kind}: add ${n} with ids: ${(n / addS).toFixed(0)} vec/s acknowledged, ${(n / addSearchableS).toFixed(0)} vec/s searchable`);
    const afterAdd = cluster.memory().map((m) => mib(m.rssBytes));
    const heapAfterAdd = await heaps(client);
    // 2. upsert 10%
    const upserts = Math.floor(n / 10);
    t0 = nowMs();
    const ups: Promise<void>[] = [];
    for (let off = 0; off < upserts; off += BATCH) {
      const m = Math.min(BATCH, upserts - off);
      const ids = Array.from({ length: m }, (_, i) => off + i);
      ups.push(client.upsert(id, ids, base.subarray(off * DIM, (off + m) * DIM), ids.map((i) => ({ row: i, v: 2 }))));
    }
    await Promise.all(ups);
    const upsertS = (nowMs() - t0) / 1000;
    log(`${kind}: upsert ${upserts}: ${(upserts / upsertS).toFixed(0)} rec/s (searchable on resolve)`);
    await until('upserts compacted', async () => (await shardStatus(client, id)).every((s) => s.awaitingCompaction === 0 || s.compactions.count > 0));
    await client.compact(id);
    // 3. compaction cost: 1% dead (kept below the background threshold per batch), one explicit compaction
    const dead = Math.floor(n / 100);
    const deadIds = Array.from({ length: dead }, (_, i) => upserts + i * 50).filter((x) => x < n && x % 101 !== 0);
    for (let off = 0; off < deadIds.length; off += 1000) await client.delete(id, deadIds.slice(off, off + 1000));
    const before = await shardStatus(client, id);
    const bgDuring = before.reduce((a, s) => a + s.compactions.count, 0);
    t0 = nowMs();
    const removedNow = await client.compact(id);
    const compactMs = nowMs() - t0;
    const afterCompact = await shardStatus(client, id);
    const faissMs = Math.max(...afterCompact.map((s, i) => (s.compactions.count > before[i]!.compactions.count ? s.compactions.lastMs : 0)));
    log(`${kind}: compaction of ${removedNow} dead vectors (${before.reduce((a, s) => a + s.awaitingCompaction, 0)} waiting, ${bgDuring} background compactions so far) in a ${before.reduce((a, s) => a + s.faissNtotal, 0)}-vector index: ${compactMs.toFixed(1)} ms through the client, ${faissMs.toFixed(1)} ms per shard in remove_ids + remap`);
    // 4. mass delete: all but every 101st row
    const gone = new Set(deadIds);
    const toDelete: number[] = [];
    for (let i = 0; i < n; i++) if (i % 101 !== 0 && !gone.has(i)) toDelete.push(i);
    const bgBefore = afterCompact.reduce((a, s) => a + s.compactions.count, 0);
    const bgMsBefore = afterCompact.reduce((a, s) => a + s.compactions.ms, 0);
    t0 = nowMs();
    let deleted = 0;
    const inFlight: Promise<void>[] = [];
    for (let off = 0; off < toDelete.length; off += BATCH) {
      inFlight.push(client.delete(id, toDelete.slice(off, off + BATCH)).then((r) => void (deleted += r.deleted)));
      if (inFlight.length >= 4) await inFlight.shift();
    }
    await Promise.all(inFlight);
    const deleteS = (nowMs() - t0) / 1000;
    const survivors = Array.from({ length: Math.ceil(n / 101) }, (_, i) => i * 101).filter((x) => x < n);
    await client.compact(id);
    const untilCompactedS = (nowMs() - t0) / 1000;
    const final = await shardStatus(client, id);
    log(`${kind}: ${deleted} deletes: ${(deleted / deleteS).toFixed(0)} rec/s; FAISS holds ${final.reduce((a, s) => a + s.faissNtotal, 0)} vectors (${survivors.length} survivors) after ${untilCompactedS.toFixed(1)} s`);
    // Search vs an exact reference over the survivors.
    setOmpNumThreads(2);
    const ref = FaissIndex.fromFactory(DIM, 'Flat', 'l2');
    const rows = new Float32Array(survivors.length * DIM);
    survivors.forEach((r, j) => rows.set(base.subarray(r * DIM, (r + 1) * DIM), j * DIM));
    await ref.add(rows);
    const want = await ref.search(queries, 10);
    if (kind === 'ivf') await client.setNprobe(id, 16);
    const got = await client.search(id, queries, 10);
    let exact = true;
    let hit = 0;
    for (let q = 0; q < 100; q++) {
      const w = Array.from({ length: 10 }, (_, i) => survivors[Number(want.labels[q * 10 + i])]!);
      const g = got.ids![q]!;
      if (JSON.stringify(w) !== JSON.stringify(g)) exact = false;
      const ws = new Set(w);
      hit += g.filter((x) => ws.has(x as number)).length;
      for (const x of g) if ((x as number) % 101 !== 0) throw new Error(`bench: deleted record ${x} returned by search`);
    }
    await sleep(1000); // let the scheduled malloc_trim run
    const mem = cluster.memory();
    const heapAfterDeletes = await heaps(client);
    return {
      kind,
      n,
      addVecPerSec: Math.round(n / addS),
      addSearchableVecPerSec: Math.round(n / addSearchableS),
      upserts,
      upsertRecPerSec: Math.round(upserts / upsertS),
      compaction: { deadVectors: before.reduce((a, s) => a + s.awaitingCompaction, 0), faissNtotalBefore: before.reduce((a, s) => a + s.faissNtotal, 0), ms: Math.round(faissMs * 10) / 10, removed: removedNow },
      massDelete: {
        deletes: deleted,
        totalDeletes: deleted + deadIds.length,
        deleteRecPerSec: Math.round(deleted / deleteS),
        untilCompactedSeconds: Math.round(untilCompactedS * 10) / 10,
        backgroundCompactions: final.reduce((a, s) => a + s.compactions.count, 0) - bgBefore,
        backgroundCompactionMs: Math.round(final.reduce((a, s) => a + s.compactions.ms, 0) - bgMsBefore),
        survivors: survivors.length,
        faissNtotalAfter: final.reduce((a, s) => a + s.faissNtotal, 0),
        searchExact: exact,
        recallAt10: hit / 1000,
      },
      rssMiB: { afterAdd, afterDeletes: mem.map((m) => mib(m.rssBytes)), peak: mem.map((m) => mib(m.peakRssBytes)) },
      heapMiB: { afterAdd: heapAfterAdd, afterDeletes: heapAfterDeletes },
    };
  } finally {
    await client.close();
    await cluster.stop();
  }
}

function markdown(cases: RecordsCase[], quick: boolean): string {
  const lines = [
    `# Records bench (${quick ? 'quick' : 'full'})`,
    '',
    `${SERVERS} servers x 1 thread, SyntheticDataset dim ${DIM}, batches of ${BATCH} records with integer ids, WAL + fsync.`,
    '',
    '| kind | n | add vec/s (acked) | add vec/s (searchable) | upsert rec/s | delete rec/s | compaction: dead / FAISS ntotal, ms per shard | mass delete: deletes, background compactions (ms total), until compacted | search after | RSS MiB after add / after deletes / peak | V8 heap MiB after add / after deletes |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- |',
  ];
  for (const c of cases) {
    const m = c.massDelete;
    lines.push(
      `| ${c.kind} | ${c.n} | ${c.addVecPerSec} | ${c.addSearchableVecPerSec} | ${c.upsertRecPerSec} | ${m.deleteRecPerSec} | ${c.compaction.deadVectors} / ${c.compaction.faissNtotalBefore}, ${c.compaction.ms} ms | ${m.deletes} (${m.totalDeletes} in all), ${m.backgroundCompactions} (${m.backgroundCompactionMs} ms), ${m.untilCompactedSeconds} s; FAISS ${m.faissNtotalAfter} = ${m.survivors} survivors | ${m.searchExact ? 'exact' : `recall@10 ${m.recallAt10}`} | ${c.rssMiB.afterAdd.join('+')} / ${c.rssMiB.afterDeletes.join('+')} / ${c.rssMiB.peak.join('+')} | ${c.heapMiB.afterAdd.join('+')} / ${c.heapMiB.afterDeletes.join('+')} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

export async function runRecordsBench(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const kindsArg = argv[argv.indexOf('--kinds') + 1];
  const kinds = (argv.includes('--kinds') && kindsArg ? kindsArg.split(',') : ['flat', 'ivf']) as Kind[];
  const outArg = argv.includes('--out') ? argv[argv.indexOf('--out') + 1] : undefined;
  const out = outArg ?? join(REPO, 'bench', 'results');
  const n = quick ? 101_000 : 1_010_000;
  const log = (m: string): void => void process.stderr.write(`[bench records ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const cases: RecordsCase[] = [];
  for (const kind of kinds) cases.push(await runCase(kind, n, log));
  mkdirSync(out, { recursive: true });
  const name = `records-${quick ? 'quick' : 'full'}`;
  writeFileSync(join(out, `${name}.json`), `${JSON.stringify({ createdAt: new Date().toISOString(), servers: SERVERS, dim: DIM, batch: BATCH, cases }, null, 2)}\n`);
  writeFileSync(join(out, `${name}.md`), markdown(cases, quick));
  process.stdout.write(markdown(cases, quick));
}
