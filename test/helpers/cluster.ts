/**
 * Real `dfaiss server` processes on loopback with ephemeral ports, through the product's own
 * launcher (LocalCluster, as `dfaiss launch local` and the benchmark use it): they append
 * themselves to a discovery file, and stop() / kill() signal them by PID.
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
  /** The launcher underneath. */
  local: LocalCluster;
  /** Starts (or restarts) server `rank` with the same storage; `env` adds environment variables (test hooks). */
  start(rank: number, extra?: string[], env?: Record<string, string>): Promise<TestServer>;
  /** Kills server `rank` (SIGKILL unless a signal is given) and waits for it to exit. */
  kill(rank: number, signal?: NodeJS.Signals): Promise<void>;
  /** Stops every server and removes the temp folder (unless keepDir). */
  stop(opts?: { keepDir?: boolean }): Promise<void>;
}

export async function startCluster(n: number, opts: { threads?: number; dir?: string; loadIndex?: boolean; /** Extra `dfaiss server` flags for every start. */ serverArgs?: string[] } = {}): Promise<TestCluster> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (npm test does it) first`);
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'dfaiss-cluster-'));
  const saveDir = join(dir, 'data');
  const discovery = join(dir, 'discovery.txt');
  const local = new LocalCluster({
    numServers: n,
    saveDir,
    discoveryConfig: discovery,
    threadsPerServer: opts.threads ?? 1,
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
  await local.start();
  for (let r = 0; r < n; r++) track(r);

  return {
    dir,
    saveDir,
    discovery,
    servers,
    local,
    async start(rank, extra = [], env = {}) {
      await local.restartServer(rank, { args: extra, env });
      return track(rank);
    },
    kill: (rank, signal = 'SIGKILL') => local.killServer(rank, signal),
    async stop({ keepDir = false } = {}) {
      await local.stop();
      if (!keepDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
