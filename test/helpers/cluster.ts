/**
 * Starts real `dfaiss server` processes on loopback with ephemeral ports, like nats.js's
 * test launcher: they append themselves to a discovery file, and stop() kills them by PID.
 * With ranksPerProcess K (or DFAISS_TEST_RANKS_PER_PROCESS=K in the environment, capped at
 * half the ranks), each process serves K consecutive ranks (`dfaiss server
 * --ranks-per-process K`): kill(rank) then kills the process and so every rank of it, and
 * start(rank) starts them all again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForListeningEvents } from '../../src/launch/listening.js';
import { serverEnv, serverNodeArgs } from '../../src/launch/server-process.js';

export const CLI = new URL('../../dist/cli/main.js', import.meta.url).pathname;

export interface TestServer {
  rank: number;
  port: number;
  /** When started with --metrics-port. */
  metricsPort?: number;
  proc: ChildProcess;
}

export interface TestCluster {
  dir: string;
  saveDir: string;
  discovery: string;
  servers: TestServer[];
  /** Ranks per server process (1 unless asked for). */
  ranksPerProcess: number;
  /**
   * Starts (or restarts) server `rank` with the same storage; `env` adds environment variables
   * (test hooks). With several ranks per process: the whole process of `rank` (nothing when it runs).
   */
  start(rank: number, extra?: string[], env?: Record<string, string>): Promise<TestServer>;
  /** Kills server `rank`'s process (SIGKILL unless a signal is given) and waits for it to exit. */
  kill(rank: number, signal?: NodeJS.Signals): Promise<void>;
  /** Stops every server and removes the temp folder (unless keepDir). */
  stop(opts?: { keepDir?: boolean }): Promise<void>;
}

export async function startCluster(
  n: number,
  opts: { threads?: number; dir?: string; loadIndex?: boolean; /** Extra `dfaiss server` flags for every start. */ serverArgs?: string[]; ranksPerProcess?: number } = {},
): Promise<TestCluster> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (npm test does it) first`);
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'dfaiss-cluster-'));
  const saveDir = join(dir, 'data');
  const discovery = join(dir, 'discovery.txt');
  writeFileSync(discovery, `${n}\n`);
  const servers: TestServer[] = [];
  // From the environment (a whole test file run that way), at most half the ranks share a
  // process: tests that kill one server and use another keep a second process to use.
  const perProcess = opts.ranksPerProcess ?? Math.max(1, Math.min(Number(process.env.DFAISS_TEST_RANKS_PER_PROCESS ?? 1), Math.ceil(n / 2)));
  if (!Number.isSafeInteger(perProcess) || perProcess < 1) throw new Error(`ranksPerProcess must be a positive integer, got ${perProcess}`);

  const start = async (rank: number, extra: string[] = [], env: Record<string, string> = {}): Promise<TestServer> => {
    // The process of `rank` serves ranks first..first+count-1.
    const first = perProcess === 1 ? rank : rank - (rank % perProcess);
    const count = perProcess === 1 ? 1 : Math.min(perProcess, n - first);
    const running = servers[rank]?.proc;
    // Several ranks per process: a rank whose process is running came back with another
    // rank of it (tests restart rank by rank), and `--port P` (P: the rank's old port) means
    // "the ports they had", one per rank.
    if (perProcess > 1 && running && running.exitCode === null && running.signalCode === null) return servers[rank]!;
    if (perProcess > 1) {
      const at = extra.indexOf('--port');
      const old = Array.from({ length: count }, (_, i) => servers[first + i]?.port ?? 0);
      if (at >= 0) extra = [...extra.slice(0, at + 1), old.join(','), ...extra.slice(at + 2)];
    }
    const multi = perProcess === 1 ? [] : ['--ranks-per-process', String(count)];
    const args = [CLI, 'server', '--rank', String(first), ...multi, '--port', '0', '--save-dir', saveDir, '--threads', String(opts.threads ?? 1), ...(opts.serverArgs ?? []), ...extra];
    // Only first starts announce themselves; restarts keep their line by reusing... a new port,
    // so rewrite the discovery file from the known servers instead.
    // As the launchers start servers (Node flags, OpenBLAS pool size).
    const proc = spawn(process.execPath, [...serverNodeArgs(), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...serverEnv(opts.threads ?? 1), OMP_WAIT_POLICY: 'PASSIVE', DFAISS_LOG_LEVEL: process.env.DFAISS_LOG_LEVEL ?? 'warn', ...env },
    });
    proc.stderr!.on('data', (d: Buffer) => process.env.DFAISS_TEST_VERBOSE && process.stderr.write(d));
    const events = await waitForListeningEvents(proc, count, { label: count === 1 ? `server ${rank}` : `servers ${first}-${first + count - 1}` });
    for (const { rank: r = first, port, metricsPort } of events) servers[r] = { rank: r, port, proc, ...(metricsPort === undefined ? {} : { metricsPort }) };
    writeFileSync(discovery, `${n}\n${servers.filter(Boolean).map((s) => `127.0.0.1,${s.port}`).join('\n')}\n`);
    return servers[rank]!;
  };

  const kill = async (rank: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const s = servers[rank];
    if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return;
    const exited = new Promise((r) => s.proc.once('exit', r));
    process.kill(s.proc.pid!, signal);
    await exited;
  };

  for (let r = 0; r < n; r += perProcess) await start(r, opts.loadIndex ? ['--load-index'] : []);

  return {
    dir,
    saveDir,
    discovery,
    servers,
    ranksPerProcess: perProcess,
    start,
    kill,
    async stop({ keepDir = false } = {}) {
      // One signal per process (its ranks share it).
      const firsts = new Map(servers.filter(Boolean).map((s) => [s.proc, s.rank]));
      await Promise.all([...firsts.values()].map((rank) => kill(rank, 'SIGTERM')));
      if (!keepDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
