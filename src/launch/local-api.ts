/**
 * LocalCluster's public option and result types (re-exported by local.ts and the package
 * entry).
 */
import type { Logger } from '../util/logger.js';

export interface LocalClusterOptions {
  /** How many server processes. */
  numServers: number;
  /** Storage root of every server ({saveDir}/{index}/{rank}). Created when missing. */
  saveDir: string;
  /** Discovery file to write (count line, then one `host,port` line per server). */
  discoveryConfig: string;
  /** Server i listens on basePort + i; undefined = ports picked by the OS. */
  basePort?: number;
  /** Interface the servers bind. @default '127.0.0.1' */
  host?: string;
  /**
   * Serve each server's Prometheus metrics, /healthz and /readyz over HTTP: server i on
   * metricsPort + i, or on a free port each when 0 (see LocalServerInfo.metricsPort).
   * Off when undefined.
   */
  metricsPort?: number;
  /** Servers load their saved indexes before serving. @default false */
  loadIndex?: boolean;
  /** FAISS (OpenMP/BLAS) threads per server. @default max(1, floor(cores / numServers)) */
  threadsPerServer?: number;
  /**
   * Servers (ranks) per Node process: each process is one `dfaiss server --ranks-per-process K`
   * serving K consecutive ranks, each on its own port; a crash (and a restart) takes all K.
   * @default 1
   */
  ranksPerProcess?: number;
  /** Restart a server that exits on its own (with --load-index). @default false */
  restartOnCrash?: boolean;
  /** Restarts allowed per server within restartWindowMs before giving up on it. @default 5 */
  maxRestarts?: number;
  /** @default 60_000 */
  restartWindowMs?: number;
  /** Delay before the first restart; doubles with each recent restart (max 10 s). @default 500 */
  restartDelayMs?: number;
  /** Time a server may take to listen (loading big indexes takes a while). @default 300_000 */
  startTimeoutMs?: number;
  /** Time a server gets to shut down (and save) after SIGTERM before SIGKILL. @default 60_000 */
  stopTimeoutMs?: number;
  /** Where the servers' JSON log lines go: our stderr, or kept in memory (logTail()). @default 'inherit' */
  serverLogs?: 'inherit' | 'capture';
  /** DFAISS_LOG_LEVEL for the servers. @default the environment's, else 'info' */
  serverLogLevel?: string;
  /** Extra environment variables for the servers (DFAISS_SECRET is inherited from ours). */
  env?: Record<string, string>;
  /** Extra `dfaiss server` arguments for every server, e.g. ['--secret-file', f, '--tls-key', k, '--tls-cert', c]. */
  serverArgs?: string[];
  /** The launcher's own logger. @default silent */
  logger?: Logger;
  /** Path of the `dfaiss` CLI script (dist/cli/main.js). @default found next to this module */
  cliPath?: string;
  /** Extra node flags for every server, e.g. ['--cpu-prof', '--cpu-prof-dir', dir]. */
  nodeArgs?: string[];
}

export type ServerStatus = 'starting' | 'up' | 'restarting' | 'down' | 'stopped';

export interface LocalServerInfo {
  rank: number;
  /** The address clients use (as written to the discovery file). */
  host: string;
  /** 0 until the server listens. */
  port: number;
  /** PID of the current process (0 when none). */
  pid: number;
  status: ServerStatus;
  /** Restarts so far. */
  restarts: number;
  /** HTTP port of the server's /metrics, /healthz, /readyz (LocalClusterOptions.metricsPort; 0 until it listens). */
  metricsPort?: number;
}

export interface ServerExitEvent {
  rank: number;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** A restart is scheduled. */
  willRestart: boolean;
}

export interface LocalClusterEvents {
  /** A server listens (first start or restart). */
  up: [LocalServerInfo];
  /** A server exited while the cluster was not stopping. */
  exit: [ServerExitEvent];
  /** A server crashed too often; it stays down. */
  giveUp: [{ rank: number; restarts: number }];
  /** Every server is down and none will be restarted. */
  allDown: [];
}
