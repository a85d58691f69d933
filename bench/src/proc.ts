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
    // schedstat is per thread: sum the process's threads (FAISS, libuv workers, V8's GC;
    // they live as long as the process, so none is missed).
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileText(`/proc/${pid}/task/${tid}/schedstat`);
      if (text) ns += Number(text.split(' ')[0]);
    }
    return ns / 1e9;
  } catch {
    return procCpuSeconds(pid);
  }
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
