/**
 * Results: the JSON record, the markdown table, and the issue's targets checked against
 * them. The original's figures (issue 6) are quoted as "measured elsewhere": they were
 * measured on this kind of machine with the same scenario, but not in this run.
 */
import type { DfaissResult } from './dfaiss.js';
import type { LimitResult } from './limit.js';
import { fmt } from './stats.js';
import type { DatasetName, IndexKind } from './workload.js';

const MiB = 1024 * 1024;

/** Python distributed-faiss with 4 servers, and in-process FAISS, from issue 6 (synthetic 500k x 128 only). */
export const MEASURED_ELSEWHERE = {
  original: {
    flat: { ingest: 161_849, p50: 23.7, p99: 48, qps100: 35, qps100Note: '35 (733 with 1 thread/server)', rssMiB: 270 },
    ivf: { ingest: 25_207, p50: 2.85, p99: 17.3, qps100: 1_149, rssMiB: 270 },
  },
  inProcess: {
    flat: { ingest: 287_000, p50: 15.8, qps100: 847, note: 'batch-1 p50 and batch-100 QPS: 2-shard floor' },
    ivf: { ingest: 57_882, p50: 0.75, p99: 2.08, qps100: 2_669 },
  },
} as const;

export interface CaseResult {
  dataset: DatasetName;
  kind: IndexKind;
  n: number;
  dim: number;
  nq: number;
  /** Load average (1, 5, 15 min) when this case started and ended. */
  loadBefore: number[];
  loadAfter: number[];
  seconds: number;
  /**
   * CPU seconds used on the machine during this case by processes other than the bench and
   * its servers (/proc/stat busy time minus our own): how quiet the machine really was. The
   * load average cannot say, since it counts our own 5 processes.
   */
  foreignCpuSeconds: number;
  /** Attempts made (--retry-noisy); the quietest was kept. */
  attempts: number;
  dfaiss?: DfaissResult & { recall: number };
  limit1?: LimitResult & { recall: number };
  limit2?: LimitResult & { recall: number };
}

export interface RunRecord {
  name: string;
  mode: 'full' | 'quick';
  argv: string[];
  startedAt: string;
  seconds: number;
  git: { commit: string; dirty: boolean };
  machine: { cpus: number; cpuModel: string; memGiB: number; node: string; faiss: string; ompWaitPolicy: string; uvThreadpoolSize: string };
  loadAtStart: number[];
  loadAtEnd: number[];
  quietWait: { waitedSeconds: number; threshold: number; reached: boolean } | null;
  counts: Record<string, number>;
  datasets: Array<{ name: DatasetName; description: string; n: number; dim: number; nq: number; batch: number; trainPerShard: number; loadSeconds: number; truthSeconds: number }>;
  cases: CaseResult[];
  targets: Target[];
  /** Seconds spent waiting for quiet before retried cases (included in seconds). */
  retryWaitSeconds: number;
}

export interface Target {
  name: string;
  value: number | null;
  required: string;
  pass: boolean | null;
  note?: string;
}

const ratio = (a: number | undefined, b: number | undefined): number | null => (a !== undefined && b !== undefined && b !== 0 ? a / b : null);

/** The issue's targets, checked on the synthetic case (500k x 128 in the full run). */
export function checkTargets(cases: CaseResult[]): Target[] {
  const c = (kind: IndexKind) => cases.find((x) => x.dataset === 'synthetic' && x.kind === kind);
  const out: Target[] = [];
  const flat = c('flat');
  const ivf = c('ivf');
  const orig = MEASURED_ELSEWHERE.original;
  if (flat?.dfaiss) {
    const d = flat.dfaiss;
    const need = 2.5 * orig.flat.ingest;
    out.push({ name: 'flat ingest (vec/s)', value: d.ingest.vecPerSec, required: `>= 2.5x original = ${fmt(need)}`, pass: d.ingest.vecPerSec >= need });
    if (flat.limit2) {
      const r = ratio(d.batch100.qps, flat.limit2.batch100.qps)!;
      out.push({ name: 'flat batch-100 QPS / 2-shard floor', value: r, required: '>= 0.9', pass: r >= 0.9 });
      const p = ratio(d.batch1.p50, flat.limit2.batch1.p50)!;
      out.push({ name: 'flat batch-1 p50 / 2-shard floor', value: p, required: '<= 1.1', pass: p <= 1.1 });
    }
  }
  if (ivf?.dfaiss) {
    const d = ivf.dfaiss;
    out.push({ name: 'IVF batch-1 p50 (ms)', value: d.batch1.p50, required: '<= 1.0', pass: d.batch1.p50 <= 1.0 });
    out.push({ name: 'IVF batch-1 p99 (ms)', value: d.batch1.p99, required: '<= 2.5', pass: d.batch1.p99 <= 2.5 });
    const best = Math.max(ivf.limit1?.batch100.qps ?? 0, ivf.limit2?.batch100.qps ?? 0);
    if (best > 0) {
      const r = d.batch100.qps / best;
      out.push({ name: 'IVF batch-100 QPS / in-process (best of 1 index, 2 shards)', value: r, required: '>= 0.9', pass: r >= 0.9 });
    }
    const need = 3 * orig.ivf.ingest;
    out.push({ name: 'IVF ingest (vec/s)', value: d.ingest.vecPerSec, required: `>= 3x original = ${fmt(need)}`, pass: d.ingest.vecPerSec >= need });
  }
  for (const x of cases) {
    if (!x.dfaiss) continue;
    const worst = Math.max(...x.dfaiss.servers.map((s) => s.peakRssBytes - s.dataBytes));
    out.push({
      name: `${x.dataset} ${x.kind}: peak RSS - (vectors + metadata), worst server (MiB)`,
      value: worst / MiB,
      required: '<= 80',
      pass: worst / MiB <= 80,
    });
    // The same budget on private memory: RSS counts the node binary's file pages (~38 MiB),
    // which every server on the machine shares. Sampled, so it can miss a short peak.
    const worstAnon = Math.max(...x.dfaiss.servers.map((s) => s.peakAnonBytes - s.dataBytes));
    out.push({
      name: `${x.dataset} ${x.kind}: peak private RSS (RssAnon, sampled) - (vectors + metadata), worst server (MiB)`,
      value: worstAnon / MiB,
      required: '<= 80',
      pass: worstAnon / MiB <= 80,
    });
  }
  return out;
}

function caseTable(x: CaseResult): string[] {
  const d = x.dfaiss;
  const l1 = x.limit1;
  const l2 = x.limit2;
  const synth = x.dataset === 'synthetic' && x.n === 500_000;
  const orig = synth ? MEASURED_ELSEWHERE.original[x.kind] : null;
  const inproc = synth ? MEASURED_ELSEWHERE.inProcess[x.kind] : null;
  const rows: string[] = [
    `| metric | dfaiss (4 servers x 1 thread) | in-process 1 index x 2 threads | in-process 2 shards x 1 thread | dfaiss / 1 index | dfaiss / 2 shards | original dfaiss (measured elsewhere) | in-process (measured elsewhere) |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|`,
  ];
  const row = (label: string, pick: (r: DfaissResult | LimitResult) => number | undefined, o?: number | string, ip?: number | string) => {
    const a = d ? pick(d) : undefined;
    const b = l1 ? pick(l1) : undefined;
    const c = l2 ? pick(l2) : undefined;
    const show = (v: number | string | undefined) => (typeof v === 'string' ? v : fmt(v));
    rows.push(`| ${label} | ${fmt(a)} | ${fmt(b)} | ${fmt(c)} | ${fmt(ratio(a, b))} | ${fmt(ratio(a, c))} | ${show(o)} | ${show(ip)} |`);
  };
  const o = orig as Record<string, number | string> | null;
  const ip = inproc as Record<string, number | string> | null;
  row('ingest (vec/s)', (r) => r.ingest.vecPerSec, o?.ingest, ip?.ingest);
  row('batch 1 p50 (ms)', (r) => r.batch1.p50, o?.p50, ip?.p50);
  row('batch 1 p99 (ms)', (r) => r.batch1.p99, o?.p99, ip?.p99);
  row('batch 10 QPS', (r) => r.batch10.qps);
  row('batch 100 QPS', (r) => r.batch100.qps, o?.qps100Note ?? o?.qps100, ip?.qps100);
  row('recall@10 vs exact', (r) => (r as { recall?: number }).recall);
  if (d) {
    const peak = Math.max(...d.servers.map((s) => s.peakRssBytes)) / MiB;
    const budget = Math.max(...d.servers.map((s) => s.dataBytes)) / MiB + 80;
    const anon = Math.max(...d.servers.map((s) => s.peakAnonBytes)) / MiB;
    rows.push(`| peak RSS per server (MiB, worst; VmHWM) | ${fmt(peak)} | | | budget ${fmt(budget)} (data + 80) | | ${o?.rssMiB ?? '—'} | |`);
    rows.push(`| peak private RSS per server (MiB, worst; RssAnon sampled every 100 ms) | ${fmt(anon)} | | | | | | |`);
  }
  return rows;
}

export function markdown(rec: RunRecord): string {
  const L = (n: number[]) => n.map((v) => v.toFixed(2)).join(' / ');
  const out: string[] = [];
  out.push(`# dfaiss benchmark: ${rec.name}`);
  out.push('');
  out.push(
    `${rec.mode} run of \`${['npm run bench --', ...rec.argv].join(' ')}\`, ${rec.startedAt}, ${fmt(rec.seconds)} s` +
      (rec.retryWaitSeconds > 0 ? ` (of which ${fmt(rec.retryWaitSeconds)} s waiting for quiet before retried cases)` : '') +
      `; git ${rec.git.commit.slice(0, 10)}${rec.git.dirty ? ' (uncommitted changes in the tree)' : ''}. ` +
      `${rec.machine.cpus} x ${rec.machine.cpuModel}, ${rec.machine.memGiB} GiB, Node ${rec.machine.node}, FAISS ${rec.machine.faiss}, OMP_WAIT_POLICY=${rec.machine.ompWaitPolicy}. ` +
      `Load average (1/5/15 min) at start ${L(rec.loadAtStart)}, at end ${L(rec.loadAtEnd)}` +
      (rec.quietWait ? `; waited ${fmt(rec.quietWait.waitedSeconds)} s for the 1-min load to drop below ${rec.quietWait.threshold} (${rec.quietWait.reached ? 'reached' : 'NOT reached'})` : '') +
      '.',
  );
  out.push('');
  out.push(
    'Scenario: 4 `dfaiss server` processes on loopback (`--threads 1`, OMP_WAIT_POLICY=PASSIVE), one IndexClient; top-10 with metadata (the row number); ' +
      `L2. Flat = \`indexBuilderType: 'flat'\`; IVF = \`ivf_simple\`, 1024 centroids, nprobe 16, trainNum = n / 4 with shared training (one training on n / 4 rows sampled across the shards, on one server with 2 threads, starting once the cluster holds n / 4 vectors; the limits train on as many rows). ` +
      'Ingest: first addIndexData (all batches issued at once) until every shard is TRAINED and ntotal == n (full run: median of 3 runs on fresh clusters); searches start once the servers are idle again. ' +
      `Searches are measured after an untimed warm-up (${rec.counts.warmup} single queries and ${Math.ceil((rec.counts.warmup ?? 0) / 60)} batch-100 searches, for V8's compiler). Batch 1: ${rec.counts.single} sequential queries; batch 10: ${rec.counts.reps10} searches; batch 100: ${rec.counts.reps100} searches (QPS = queries / summed search time). ` +
      'recall@10 against an exact (Flat) search of the same data. Limits run in this process through FaissIndex: IVF trains once (2 threads) on n / 4 sampled rows, ' +
      'the 2 shards get clones of that quantizer and add / search concurrently with 1 thread each. Ratios are dfaiss / limit: above 1 is better for vec/s and QPS, below 1 is better for latencies.',
  );
  for (const ds of rec.datasets) {
    out.push('');
    out.push(`## ${ds.name}: ${ds.n.toLocaleString('en-US')} x ${ds.dim}, ${ds.nq} queries`);
    out.push('');
    out.push(ds.description + '.');
    for (const x of rec.cases.filter((c) => c.dataset === ds.name)) {
      out.push('');
      out.push(
        `### ${x.kind === 'flat' ? 'Flat (l2)' : 'IVF1024,Flat (nprobe 16)'} — ${fmt(x.seconds)} s; other processes used ${fmt(x.foreignCpuSeconds)} CPU-s ` +
          `(${fmt((100 * x.foreignCpuSeconds) / (x.seconds * rec.machine.cpus))}% of the machine)${x.attempts > 1 ? `, quietest of ${x.attempts} attempts` : ''}; load ${L(x.loadBefore)} before, ${L(x.loadAfter)} after (includes our own processes)`,
      );
      out.push('');
      out.push(...caseTable(x));
      if (x.dfaiss) {
        const g = x.dfaiss.ingest;
        out.push('');
        out.push(
          `dfaiss ingest: ${x.dfaiss.ingest.runs.length > 1 ? `median of ${x.dfaiss.ingest.runs.length} runs on fresh clusters (${x.dfaiss.ingest.runs.map((v) => fmt(v)).join(', ')} vec/s); in the measured run all` : 'all'} batches sent after ${fmt(g.sendSeconds)} s, every shard trained after ${fmt(g.trainedSeconds)} s, everything searchable after ${fmt(g.seconds)} s` +
            (Number.isNaN(g.settleSeconds) ? ' (searches measured right away).' : `; servers busy with background work for ${fmt(Math.max(0, g.settleSeconds))} s more (searches measured after that).`) +
            (x.limit1 && x.kind === 'ivf' ? ` In-process: train ${fmt(x.limit1.ingest.trainSeconds)} s, add ${fmt(x.limit1.ingest.addSeconds)} s (1 index) / ${fmt(x.limit2?.ingest.addSeconds)} s (2 shards).` : '') +
            ` Servers (peak RSS / RSS at end of ingest / peak RssAnon / vectors + metadata, MiB): ` +
            x.dfaiss.servers.map((s) => `${fmt(s.peakRssBytes / MiB)} / ${fmt(s.statusRssBytes / MiB)} / ${fmt(s.peakAnonBytes / MiB)} / ${fmt(s.dataBytes / MiB)}`).join('; ') +
            '.',
        );
      }
    }
  }
  if (rec.targets.length) {
    out.push('');
    out.push(`## Targets (issue 6)${rec.mode === 'quick' ? ' — quick run: indicative only, the targets are for 500k vectors' : ''}`);
    out.push('');
    out.push('| target | value | required | met |');
    out.push('|---|---:|---|---|');
    for (const t of rec.targets) out.push(`| ${t.name} | ${fmt(t.value)} | ${t.required} | ${t.pass === null ? '—' : t.pass ? 'yes' : '**no**'} |`);
  }
  out.push('');
  return out.join('\n');
}
