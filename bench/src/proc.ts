/** Per-process CPU time at ns resolution and disk use of a folder, for the benchmark's per-call figures. */
import { lstatSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { procCpuSeconds } from './cluster.js';

/**
 * CPU seconds a process has run, from /proc/<pid>/schedstat (ns; /proc/<pid>/stat counts
 * 10 ms ticks, too coarse for a 0.1 ms call). Falls back to the tick count; 0 when gone.
 */
export function schedCpuSeconds(pid: number): number {
  try {
    const [main, others] = threadCpuSeconds(pid);
    return main + others;
  } catch {
    return procCpuSeconds(pid);
  }
}

/**
 * [main thread, all other threads] CPU seconds of a process from per-thread schedstat (ns):
 * schedstat is per thread, so the threads are summed (FAISS, libuv workers, V8's GC; they
 * live as long as the process, so none is missed). Throws when the process is gone.
 */
export function threadCpuSeconds(pid: number): [number, number] {
  const out: [number, number] = [0, 0];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileText(`/proc/${pid}/task/${tid}/schedstat`);
    if (text) out[Number(tid) === pid ? 0 : 1] += Number(text.split(' ')[0]) / 1e9;
  }
  return out;
}

function readFileText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null; // a thread that just exited
  }
}

/** Bytes allocated on disk under `dir` (st_blocks x 512, as du counts them), following no links. */
export function diskBytes(dir: string): number {
  let total = 0;
  const walk = (d: string): void => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      try {
        const st = lstatSync(p);
        total += st.blocks * 512;
        if (st.isDirectory()) walk(p);
      } catch {
        // removed meanwhile (a trimmed segment, a renamed snapshot)
      }
    }
  };
  walk(dir);
  return total;
}
