/**
 * Real `dfaiss server` processes on loopback with ephemeral ports, through the product's own
 * launcher (LocalCluster, as `dfaiss launch local` and the benchmark use it): they append
 * themselves to a discovery file, and stop() / kill() signal them by PID.
 * With ranksPerProcess K (or DFAISS_TEST_RANKS_PER_PROCESS=K in the environment, capped at
 * half the ranks), each process serves K consecutive ranks (`dfaiss server
 * --ranks-per-process K`): kill(rank) then kills the process and so every rank of it, and
 * start(rank) starts them all again.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../../src/launch/local.js';

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
  /** The launcher underneath. */
  local: LocalCluster;
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
  // From the environment (a whole test file run that way), at most half the ranks share a
  // process: tests that kill one server and use another keep a second process to use.
  const perProcess = opts.ranksPerProcess ?? Math.max(1, Math.min(Number(process.env.DFAISS_TEST_RANKS_PER_PROCESS ?? 1), Math.ceil(n / 2)));
  if (!Number.isSafeInteger(perProcess) || perProcess < 1) throw new Error(`ranksPerProcess must be a positive integer, got ${perProcess}`);
  const local = new LocalCluster({
    numServers: n,
    saveDir,
    discoveryConfig: discovery,
    threadsPerServer: opts.threads ?? 1,
    ranksPerProcess: perProcess,
    loadIndex: opts.loadIndex ?? false,
    serverArgs: opts.serverArgs ?? [],
    serverLogs: process.env.DFAISS_TEST_VERBOSE ? 'inherit' : 'capture',
    serverLogLevel: process.env.DFAISS_LOG_LEVEL ?? 'warn',
    env: { OMP_WAIT_POLICY: 'PASSIVE' },
    cliPath: CLI,
  });
  const servers: TestServer[] = [];
  const track = (rank: number): TestServer => {
    const info = local.servers[rank]!;
    const server: TestServer = { rank, port: info.port, proc: local.process(rank)!, ...(info.metricsPort === undefined ? {} : { metricsPort: info.metricsPort }) };
    servers[rank] = server;
    return server;
  };
  const group = (rank: number): number[] => {
    const first = rank - (rank % perProcess);
    return Array.from({ length: Math.min(perProcess, n - first) }, (_, i) => first + i);
  };
  await local.start();
  for (let r = 0; r < n; r++) track(r);

  return {
    dir,
    saveDir,
    discovery,
    servers,
    ranksPerProcess: perProcess,
    local,
    async start(rank, extra = [], env = {}) {
      if (perProcess > 1) {
        // A rank whose process runs came back with another rank of it (tests restart rank by
        // rank); `--port P` (P: the rank's old port) means "the ports they had", one per rank.
        const running = local.process(rank);
        if (running && running.exitCode === null && running.signalCode === null) return track(rank);
        const at = extra.indexOf('--port');
        if (at >= 0) extra = [...extra.slice(0, at + 1), group(rank).map((r) => servers[r]?.port ?? 0).join(','), ...extra.slice(at + 2)];
      }
      await local.restartServer(rank, { args: extra, env });
      for (const r of group(rank)) track(r);
      return servers[rank]!;
    },
    kill: (rank, signal = 'SIGKILL') => local.killServer(rank, signal),
    async stop({ keepDir = false } = {}) {
      await local.stop();
      if (!keepDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
