// Soak (issue 7): 16 clients x 4 real servers ingesting and searching at once, then a
// search-only phase. Zero errors, every acknowledged vector searchable (count, and a sample
// found as its own nearest neighbour in a flat l2 index), and server memory flat after
// warm-up. Short in CI; DFAISS_SOAK_SECONDS=600 runs it for ten minutes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexClient } from '../../src/index.js';
import { prng } from '../../src/datasets/synthetic.js';
import { startCluster } from '../helpers/cluster.js';

const SECONDS = Number(process.env.DFAISS_SOAK_SECONDS ?? 13);
const CLIENTS = 16;
const SERVERS = 4;
const dim = 32;
const BATCH = 128;
const INDEX = 'soak';
/** Bytes a stored vector legitimately holds on a server: FAISS's copy plus metadata and its offset. */
const BYTES_PER_VECTOR = dim * 4 + 16;

/** The vectors of batch `b` of client `c`: reproducible from (c, b) alone. */
function batchVectors(c: number, b: number): Float32Array {
  const rnd = prng(c * 1_000_003 + b + 1);
  return Float32Array.from({ length: BATCH * dim }, () => rnd() * 2 - 1);
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};
const MB = 1024 * 1024;

test(`soak: ${CLIENTS} clients x ${SERVERS} servers for ${SECONDS} s: no errors, every acked vector searchable, memory flat`, { timeout: (SECONDS + 120) * 1000 }, async () => {
  const cluster = await startCluster(SERVERS);
  const clients: IndexClient[] = [];
  try {
    for (let c = 0; c < CLIENTS; c++) clients.push(await IndexClient.connect(cluster.discovery, { callTimeoutMs: 30_000, clientName: `soak-${c}` }));
    const monitor = await IndexClient.connect(cluster.discovery, { clientName: 'soak-monitor' });
    await clients[0]!.createIndex(INDEX, { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
    await Promise.all(clients.map((cl) => cl.createIndex(INDEX, { indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 })));

    const ingestMs = SECONDS * 600;
    const searchOnlyMs = SECONDS * 400;
    const errors: string[] = [];
    /** Per client: batches acknowledged (batch numbers are 0..acked-1). */
    const acked = new Array<number>(CLIENTS).fill(0);
    let searches = 0;
    // Widened on purpose: TypeScript cannot see the async tasks that change it.
    let phase = 'ingest' as 'ingest' | 'search' | 'done';
    const samples: Array<{ phase: string; t: number; rss: number[]; total: number[] }> = [];

    const randomAckedQuery = (rnd: () => number): Float32Array | null => {
      const c = Math.floor(rnd() * CLIENTS);
      if (acked[c] === 0) return null;
      const b = Math.floor(rnd() * acked[c]!);
      const i = Math.floor(rnd() * BATCH);
      return batchVectors(c, b).slice(i * dim, (i + 1) * dim);
    };

    const worker = async (c: number): Promise<void> => {
      const cl = clients[c]!;
      const rnd = prng(9000 + c);
      while (phase !== 'done') {
        try {
          if (phase === 'ingest') {
            const b = acked[c]!;
            await cl.addIndexData(INDEX, batchVectors(c, b), Array.from({ length: BATCH }, (_, i) => [c, b, i]));
            acked[c] = b + 1;
          }
          const q = randomAckedQuery(rnd);
          if (q) {
            const r = await cl.search(INDEX, q, 10);
            if (r.scores[0]!.length === 0) errors.push(`client ${c}: a search found nothing`);
            searches++;
          }
        } catch (err) {
          errors.push(`client ${c}: ${(err as Error).message}`);
          if (errors.length > 20) return;
        }
      }
    };

    const t0 = Date.now();
    const sampler = (async () => {
      while (phase !== 'done') {
        try {
          const st = await monitor.status();
          samples.push({
            phase,
            t: Date.now() - t0,
            rss: st.map((s) => s.rssBytes as number),
            total: st.map((s) => ((s.indexes as Record<string, { total: number }>)[INDEX]?.total ?? 0)),
          });
        } catch (err) {
          errors.push(`status: ${(err as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    const workers = clients.map((_, c) => worker(c));
    await new Promise((r) => setTimeout(r, ingestMs));
    phase = 'search';
    const ingestedAt = Date.now();
    await new Promise((r) => setTimeout(r, searchOnlyMs));
    phase = 'done';
    await Promise.all(workers);
    await sampler;

    const totalAcked = acked.reduce((a, b) => a + b, 0) * BATCH;
    const elapsed = (ingestedAt - t0) / 1000;
    console.log(
      `soak: ${totalAcked} vectors acked in ${elapsed.toFixed(1)} s (${Math.round(totalAcked / elapsed)}/s), ${searches} searches, ${samples.length} status samples, ${errors.length} errors`,
    );
    assert.deepEqual(errors.slice(0, 5), [], 'no errors');
    assert.ok(totalAcked >= CLIENTS * BATCH, 'every client got batches acknowledged');

    // Every acknowledged vector is searchable: the count...
    const deadline = Date.now() + 60_000;
    let ntotal = await monitor.getNtotal(INDEX);
    while (ntotal < totalAcked && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      ntotal = await monitor.getNtotal(INDEX);
    }
    assert.equal(ntotal, totalAcked, 'getNtotal == acknowledged rows (nothing lost, nothing twice)');
    console.log(`soak: all acked vectors searchable ${((Date.now() - t0) / 1000).toFixed(1)} s after the start`);
    // ...and a sample, each found as its own nearest neighbour.
    const rnd = prng(4242);
    const SAMPLE = 256;
    const queries = new Float32Array(SAMPLE * dim);
    const want: number[][] = [];
    for (let s = 0; s < SAMPLE; s++) {
      const c = Math.floor(rnd() * CLIENTS);
      const b = Math.floor(rnd() * acked[c]!);
      const i = Math.floor(rnd() * BATCH);
      queries.set(batchVectors(c, b).subarray(i * dim, (i + 1) * dim), s * dim);
      want.push([c, b, i]);
    }
    const found = await monitor.search(INDEX, queries, 1);
    console.log(`soak: sample searched ${((Date.now() - t0) / 1000).toFixed(1)} s after the start`);
    for (let s = 0; s < SAMPLE; s++) {
      assert.deepEqual(found.metadata[s], [want[s]], `acked vector ${want[s]} is its own nearest neighbour`);
      assert.ok(found.scores[s]![0]! < 1e-3, `distance to itself ${found.scores[s]![0]}`);
    }

    // Memory. Ingest phase: RSS minus the data each server legitimately holds must not grow
    // after warm-up (the first quarter): compare the last third with the first third after it.
    const ingest = samples.filter((s) => s.phase === 'ingest');
    const warm = ingest.slice(Math.floor(ingest.length / 4));
    const third = Math.max(1, Math.floor(warm.length / 3));
    const searchOnly = samples.filter((s) => s.phase === 'search');
    const half = Math.max(1, Math.floor(searchOnly.length / 2));
    for (let r = 0; r < SERVERS; r++) {
      const overhead = (s: (typeof samples)[number]) => s.rss[r]! - s.total[r]! * BYTES_PER_VECTOR;
      const early = median(warm.slice(0, third).map(overhead));
      const late = median(warm.slice(-third).map(overhead));
      const data = (ingest[ingest.length - 1]?.total[r] ?? 0) * BYTES_PER_VECTOR;
      const s1 = Math.max(...searchOnly.slice(0, half).map((s) => s.rss[r]!));
      const s2 = Math.max(...searchOnly.slice(half).map((s) => s.rss[r]!));
      console.log(
        `soak: server ${r}: data ${(data / MB).toFixed(1)} MiB; RSS minus data ${(early / MB).toFixed(1)} -> ${(late / MB).toFixed(1)} MiB while ingesting; ` +
          `search-only RSS max ${(s1 / MB).toFixed(1)} -> ${(s2 / MB).toFixed(1)} MiB`,
      );
      assert.ok(late <= early * 1.2 + 32 * MB, `server ${r}: memory beyond the data grew from ${early} to ${late} bytes while ingesting`);
      assert.ok(s2 <= s1 * 1.1 + 16 * MB, `server ${r}: RSS grew from ${s1} to ${s2} bytes in the search-only phase`);
    }
    await monitor.close();
  } finally {
    await Promise.allSettled(clients.map((c) => c.close()));
    await cluster.stop();
  }
});
