/**
 * Summarises V8 .cpuprofile files (from `node --cpu-prof`, or `npm run bench -- --server-prof DIR`):
 * self and inclusive time per function, optionally within a time window.
 *
 *   node bench/dist/cpuprofile.js FILE... [--from S] [--to S] [--top N] [--by function|file]
 *                                 [--marks bench/results/X.json --phase synthetic/flat/ingest]
 *
 * --from/--to are seconds since each profile started. --marks/--phase cut every profile to one
 * phase of a bench run (ingest, batch1, batch10, batch100 of the dfaiss side), using the
 * CLOCK_MONOTONIC marks the bench records (V8 profiles use the same clock). Several files
 * are summed (e.g. the 4 servers).
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface Row {
  key: string;
  selfMs: number;
  totalMs: number;
}

function keyOf(f: CallFrame, by: 'function' | 'file'): string {
  const file = f.url ? basename(f.url.replace(/^file:\/\//, '')) : '';
  if (by === 'file') return file || `(${f.functionName || 'native'})`;
  const name = f.functionName || '(anonymous)';
  return file ? `${name} ${file}:${f.lineNumber + 1}` : name;
}

export function summarise(paths: string[], opts: { fromS?: number; toS?: number; absUs?: [number, number]; by?: 'function' | 'file' } = {}): { rows: Row[]; totalMs: number; idleMs: number } {
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let all = 0;
  let idle = 0;
  for (const p of paths) {
    const prof = JSON.parse(readFileSync(p, 'utf8')) as Profile;
    const byId = new Map<number, ProfileNode>();
    const parent = new Map<number, number>();
    for (const n of prof.nodes) {
      byId.set(n.id, n);
      for (const c of n.children ?? []) parent.set(c, n.id);
    }
    const stackKeys = new Map<number, string[]>();
    const keysFor = (id: number): string[] => {
      let ks = stackKeys.get(id);
      if (ks) return ks;
      const set = new Set<string>();
      for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) set.add(keyOf(byId.get(cur)!.callFrame, opts.by ?? 'function'));
      ks = [...set];
      stackKeys.set(id, ks);
      return ks;
    };
    let t = 0;
    for (let i = 0; i < prof.samples.length; i++) {
      t += prof.timeDeltas[i]!;
      const s = t / 1e6;
      if ((opts.fromS !== undefined && s < opts.fromS) || (opts.toS !== undefined && s > opts.toS)) continue;
      if (opts.absUs && (prof.startTime + t < opts.absUs[0] || prof.startTime + t > opts.absUs[1])) continue;
      const dt = (prof.timeDeltas[i + 1] ?? 0) / 1000;
      const node = byId.get(prof.samples[i]!)!;
      const k = keyOf(node.callFrame, opts.by ?? 'function');
      all += dt;
      if (node.callFrame.functionName === '(idle)') {
        idle += dt;
        continue;
      }
      self.set(k, (self.get(k) ?? 0) + dt);
      for (const sk of keysFor(node.id)) total.set(sk, (total.get(sk) ?? 0) + dt);
    }
  }
  const rows = [...total.keys()].map((key) => ({ key, selfMs: self.get(key) ?? 0, totalMs: total.get(key)! }));
  return { rows, totalMs: all, idleMs: idle };
}

function main(argv: string[]): void {
  const files: string[] = [];
  let fromS: number | undefined;
  let toS: number | undefined;
  let top = 30;
  let by: 'function' | 'file' = 'function';
  let marks: string | undefined;
  let phase: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--from') fromS = Number(argv[++i]);
    else if (a === '--to') toS = Number(argv[++i]);
    else if (a === '--top') top = Number(argv[++i]);
    else if (a === '--by') by = argv[++i] as 'function' | 'file';
    else if (a === '--marks') marks = argv[++i];
    else if (a === '--phase') phase = argv[++i];
    else files.push(a);
  }
  let absUs: [number, number] | undefined;
  if (marks && phase) {
    const [dataset, kind, name] = phase.split('/');
    const rec = JSON.parse(readFileSync(marks, 'utf8')) as { cases: Array<{ dataset: string; kind: string; dfaiss?: { marksUs: Record<string, [number, number]> } }> };
    absUs = rec.cases.find((c) => c.dataset === dataset && c.kind === kind)?.dfaiss?.marksUs[name!];
    if (!absUs) throw new Error(`no marks for ${phase} in ${marks}`);
    console.log(`phase ${phase}: ${((absUs[1] - absUs[0]) / 1000).toFixed(0)} ms wall`);
  }
  const { rows, totalMs, idleMs } = summarise(files, { ...(fromS !== undefined ? { fromS } : {}), ...(toS !== undefined ? { toS } : {}), ...(absUs ? { absUs } : {}), by });
  const busy = totalMs - idleMs;
  console.log(`${files.length} profile(s): ${totalMs.toFixed(0)} ms sampled, ${idleMs.toFixed(0)} ms idle, ${busy.toFixed(0)} ms busy`);
  console.log('\nby self time:');
  for (const r of [...rows].sort((a, b) => b.selfMs - a.selfMs).slice(0, top)) {
    console.log(`${r.selfMs.toFixed(0).padStart(8)} ms ${((100 * r.selfMs) / busy).toFixed(1).padStart(5)}%  ${r.key}`);
  }
  console.log('\nby inclusive time:');
  for (const r of [...rows].sort((a, b) => b.totalMs - a.totalMs).slice(0, top)) {
    console.log(`${r.totalMs.toFixed(0).padStart(8)} ms ${((100 * r.totalMs) / busy).toFixed(1).padStart(5)}%  ${r.key}`);
  }
}

if (process.argv[1] && import.meta.url.endsWith(basename(process.argv[1]))) main(process.argv.slice(2));
