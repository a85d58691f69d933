/**
 * Starts real `dfaiss server` processes on loopback with ephemeral ports, like nats.js's
 * test launcher: they append themselves to a discovery file, and stop() kills them by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForListeningEvent } from '../../src/launch/listening.js';

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
  writeFileSync(discovery, `${n}\n`);
  const servers: TestServer[] = [];

  const start = async (rank: number, extra: string[] = [], env: Record<string, string> = {}): Promise<TestServer> => {
    const args = [CLI, 'server', '--rank', String(rank), '--port', '0', '--save-dir', saveDir, '--threads', String(opts.threads ?? 1), ...(opts.serverArgs ?? []), ...extra];
    // Only first starts announce themselves; restarts keep their line by reusing... a new port,
    // so rewrite the discovery file from the known servers instead.
    const proc = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE', DFAISS_LOG_LEVEL: process.env.DFAISS_LOG_LEVEL ?? 'warn', ...env },
    });
    proc.stderr!.on('data', (d: Buffer) => process.env.DFAISS_TEST_VERBOSE && process.stderr.write(d));
    const { port, metricsPort } = await waitForListeningEvent(proc, { label: `server ${rank}` });
    const server = { rank, port, proc, ...(metricsPort === undefined ? {} : { metricsPort }) };
    servers[rank] = server;
    writeFileSync(discovery, `${n}\n${servers.filter(Boolean).map((s) => `127.0.0.1,${s.port}`).join('\n')}\n`);
    return server;
  };

  const kill = async (rank: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const s = servers[rank];
    if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return;
    const exited = new Promise((r) => s.proc.once('exit', r));
    process.kill(s.proc.pid!, signal);
    await exited;
  };

  for (let r = 0; r < n; r++) await start(r, opts.loadIndex ? ['--load-index'] : []);

  return {
    dir,
    saveDir,
    discovery,
    servers,
    start,
    kill,
    async stop({ keepDir = false } = {}) {
      await Promise.all(servers.map((s) => kill(s.rank, 'SIGTERM')));
      if (!keepDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
