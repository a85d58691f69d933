/**
 * Local `dfaiss server` processes for the benchmark, through the product's launcher
 * (LocalCluster): loopback, ephemeral ports, one OpenMP thread each and
 * OMP_WAIT_POLICY=PASSIVE, stopped by PID. Peak memory comes from /proc/<pid>/status
 * (VmHWM) just before stopping.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCluster } from '../../dist/launch/local.js';

export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface BenchServer {
  rank: number;
  port: number;
  pid: number;
  proc: ChildProcess;
}

export interface ProcMemory {
  /** Peak resident set (VmHWM), bytes. */
  peakRssBytes: number;
  /** Current resident set (VmRSS), bytes. */
  rssBytes: number;
  /** Current private anonymous memory (RssAnon: heap, FAISS data; not the shared node binary), bytes. */
  anonBytes: number;
  /** Largest RssAnon seen by the sampler (every 100 ms while sampling) and by memory() calls, bytes. */
  peakAnonBytes: number;
  /** CPU time used so far (user + system), seconds. */
  cpuSeconds: number;
}

export interface BenchCluster {
  dir: string;
  discovery: string;
  servers: BenchServer[];
  /** VmHWM / VmRSS / RssAnon / CPU time of every server now. */
  memory(): ProcMemory[];
  /** Samples RssAnon every 100 ms until stopSampling() (it has no kernel high-water mark). */
  startSampling(): void;
  stopSampling(): void;
  /**
   * Reads memory, then stops every server and removes the temp folder. The data is
   * throw-away, so servers are SIGKILLed (a SIGTERM makes them snapshot everything to disk
   * first); graceful: SIGTERM (needed for --cpu-prof to write its profile), SIGKILL after 60 s.
   */
  stop(opts?: { graceful?: boolean }): Promise<ProcMemory[]>;
}

export interface ClusterOptions {
  /** OpenMP/BLAS threads per server. @default 1 */
  threads?: number;
  /** Extra node flags for the servers, e.g. ['--cpu-prof', '--cpu-prof-dir', dir]. */
  nodeArgs?: string[];
  /** Server log level. @default 'warn' */
  logLevel?: string;
  /** Ranks each server process serves (`--ranks-per-process`). @default 1 */
  ranksPerProcess?: number;
  /** Extra environment for the servers (e.g. glibc MALLOC_* tunables). */
  env?: Record<string, string>;
}

/** Every PID we started and have not reaped: killed on exit so an aborted run leaves nothing behind. */
const live = new Set<number>();
/** Temp folders of running clusters: removed on exit too. */
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of live) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n[bench] ${sig}: stopping servers\n`);
      process.exit(130);
    });
  }
}

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64

/** user + system CPU seconds of a process from /proc/<pid>/stat (0 when it is gone). */
export function procCpuSeconds(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15: utime, stime
  } catch {
    return 0;
  }
}

/**
 * Busy CPU seconds of the whole machine so far (all cores, from /proc/stat): user, nice and
 * system time, which is what processes are charged with. irq/softirq time (our own loopback
 * traffic, mostly) is charged to no process, so it is left out on both sides.
 */
export function machineBusySeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system] = cpu as [number, number, number];
  return (user + nice + system) / CLK_TCK;
}

/** VmHWM, VmRSS and RssAnon of a process from /proc (0 when it is gone). */
export function procMemory(pid: number): ProcMemory {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string): number => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
      return m ? Number(m[1]) * 1024 : 0;
    };
    const anon = kb('RssAnon');
    return { peakRssBytes: kb('VmHWM'), rssBytes: kb('VmRSS'), anonBytes: anon, peakAnonBytes: anon, cpuSeconds: procCpuSeconds(pid) };
  } catch {
    return { peakRssBytes: 0, rssBytes: 0, anonBytes: 0, peakAnonBytes: 0, cpuSeconds: 0 };
  }
}

export async function startCluster(n: number, opts: ClusterOptions = {}): Promise<BenchCluster> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' first`);
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-bench-'));
  liveDirs.add(dir);
  const discovery = join(dir, 'discovery.txt');
  const local = new LocalCluster({
    numServers: n,
    saveDir: join(dir, 'data'),
    discoveryConfig: discovery,
    threadsPerServer: opts.threads ?? 1,
    ...(opts.ranksPerProcess ? { ranksPerProcess: opts.ranksPerProcess } : {}),
    nodeArgs: opts.nodeArgs ?? [],
    serverLogs: process.env.DFAISS_BENCH_VERBOSE ? 'inherit' : 'capture',
    serverLogLevel: opts.logLevel ?? process.env.DFAISS_LOG_LEVEL ?? 'warn',
    env: { OMP_WAIT_POLICY: 'PASSIVE', ...opts.env },
    startTimeoutMs: 180_000, // 64 servers starting at once on 2 busy cores
    cliPath: CLI,
  });
  try {
    await local.start();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    throw err;
  }
  const servers: BenchServer[] = local.servers.map((s) => ({ rank: s.rank, port: s.port, pid: s.pid, proc: local.process(s.rank)! }));
  for (const s of servers) {
    live.add(s.pid);
    s.proc.once('exit', () => live.delete(s.pid));
  }

  // RssAnon has no kernel high-water mark: sample it (a /proc read per server every 100 ms).
  const peakAnon = servers.map(() => 0);
  const sample = (): ProcMemory[] =>
    servers.map((s, i) => {
      const m = procMemory(s.pid);
      peakAnon[i] = Math.max(peakAnon[i]!, m.anonBytes);
      return { ...m, peakAnonBytes: peakAnon[i]! };
    });
  let sampler: NodeJS.Timeout | null = null;
  const stopSampling = (): void => {
    if (sampler) clearInterval(sampler);
    sampler = null;
  };
  const memory = (): ProcMemory[] => sample();
  return {
    dir,
    discovery,
    servers,
    memory,
    startSampling() {
      sampler ??= setInterval(sample, 100);
    },
    stopSampling,
    async stop({ graceful = false } = {}) {
      const mem = memory();
      stopSampling();
      // Throw-away data: SIGKILL unless a graceful stop is wanted (SIGTERM, SIGKILL after 60 s).
      if (!graceful) local.kill();
      await local.stop();
      rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
      return mem;
    },
  };
}
