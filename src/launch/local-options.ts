/**
 * What LocalCluster makes of its options: their checks (so a bad option fails in the
 * constructor, not in a child process), the defaults that need a look at the machine (the
 * CLI script, threads per server), and the command line and environment of each server process.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { DfaissError, ValidationError } from '../errors.js';
import type { Logger } from '../util/logger.js';
import type { LocalClusterOptions } from './local-api.js';
import { serverEnv } from './server-process.js';

/** dist/cli/main.js, whether this module runs from dist/ or (under tsx) from src/. */
export function defaultCliPath(): string {
  const beside = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  if (existsSync(beside)) return beside;
  const dist = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
  if (existsSync(dist)) return dist;
  throw new DfaissError(`cannot find the dfaiss CLI (looked for ${beside} and ${dist}): build it with 'npm run build'`);
}

export function defaultThreadsPerServer(numServers: number): number {
  return Math.max(1, Math.floor(availableParallelism() / numServers));
}

/** Throws a ValidationError naming the first option out of range. */
export function checkLocalClusterOptions(opts: LocalClusterOptions): void {
  const { numServers } = opts;
  if (!Number.isSafeInteger(numServers) || numServers < 1 || numServers > 4096) {
    throw new ValidationError('numServers', 'an integer from 1 to 4096', numServers);
  }
  if (typeof opts.saveDir !== 'string' || opts.saveDir === '') throw new ValidationError('saveDir', 'a folder path', opts.saveDir);
  if (typeof opts.discoveryConfig !== 'string' || opts.discoveryConfig === '') {
    throw new ValidationError('discoveryConfig', 'a file path', opts.discoveryConfig);
  }
  if (opts.basePort !== undefined) {
    if (!Number.isSafeInteger(opts.basePort) || opts.basePort < 1 || opts.basePort + numServers - 1 > 65535) {
      throw new ValidationError('basePort', `an integer from 1 to ${65536 - numServers} (base port + ${numServers} servers must fit in 65535)`, opts.basePort);
    }
  }
  if (opts.metricsPort !== undefined) {
    if (!Number.isSafeInteger(opts.metricsPort) || opts.metricsPort < 0 || opts.metricsPort + numServers - 1 > 65535) {
      throw new ValidationError('metricsPort', `0 (free ports) or an integer from 1 to ${65536 - numServers} (metrics port + ${numServers} servers must fit in 65535)`, opts.metricsPort);
    }
    const base = opts.basePort;
    if (opts.metricsPort > 0 && base !== undefined && opts.metricsPort < base + numServers && base < opts.metricsPort + numServers) {
      throw new ValidationError('metricsPort', `a range apart from the server ports ${base}-${base + numServers - 1}`, opts.metricsPort);
    }
  }
  if (opts.ranksPerProcess !== undefined && (!Number.isSafeInteger(opts.ranksPerProcess) || opts.ranksPerProcess < 1 || opts.ranksPerProcess > numServers)) {
    throw new ValidationError('ranksPerProcess', `an integer from 1 to numServers (${numServers})`, opts.ranksPerProcess);
  }
  if (opts.threadsPerServer !== undefined && (!Number.isSafeInteger(opts.threadsPerServer) || opts.threadsPerServer < 1 || opts.threadsPerServer > 1024)) {
    throw new ValidationError('threadsPerServer', 'an integer from 1 to 1024', opts.threadsPerServer);
  }
  for (const key of ['maxRestarts', 'restartWindowMs', 'restartDelayMs', 'startTimeoutMs', 'stopTimeoutMs'] as const) {
    const v = opts[key];
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new ValidationError(key, 'a non-negative number', v);
  }
}

/** The cluster-wide part of every server's command line: the options as LocalCluster resolved them. */
export interface ClusterCommand {
  opts: LocalClusterOptions;
  cli: string;
  host: string;
  saveDir: string;
  discoveryConfig: string;
  threadsPerServer: number;
  ranksPerProcess: number;
  log: Logger;
}

/** How one process is started: a first start, or a restart (with the caller's extra arguments and environment). */
export interface SpawnRequest {
  first: boolean;
  loadIndex?: boolean;
  args?: string[];
  env?: Record<string, string>;
}

/**
 * The arguments (after Node's own server flags) and environment of the process serving
 * `ranks` (consecutive, each with the metrics port it had, if any) on `ports`. A restart
 * loads what the servers saved unless told otherwise; `args` and `env` come last (later flags win).
 */
export function serverCommand(
  c: ClusterCommand,
  ranks: ReadonlyArray<{ rank: number; metricsPort?: number }>,
  ports: readonly number[],
  spawnOpts: SpawnRequest,
): { args: string[]; env: NodeJS.ProcessEnv } {
  const { opts } = c;
  const { first } = spawnOpts;
  const { rank } = ranks[0]!;
  const multi = c.ranksPerProcess === 1 ? [] : ['--ranks-per-process', String(ranks.length)];
  const args = [...(opts.nodeArgs ?? []), c.cli, 'server', '--rank', String(rank), ...multi, '--port', ports.join(','), '--host', c.host, '--save-dir', c.saveDir];
  args.push('--threads', String(c.threadsPerServer), '--stop-on-stdin-close');
  if (opts.metricsPort !== undefined) {
    // A restart keeps the metrics ports it had, so Prometheus's targets stay valid.
    const metricsPorts = ranks.map((r) => r.metricsPort || (opts.metricsPort === 0 ? 0 : opts.metricsPort! + r.rank));
    args.push('--metrics-port', String(metricsPorts.every((p) => p === 0) ? 0 : metricsPorts[0]));
    if (metricsPorts.some((p, i) => p !== 0 && p !== metricsPorts[0]! + i)) c.log.warn({ rank, metricsPorts }, 'metrics ports are not consecutive: they follow the first');
  }
  // A restart loads what the crashed server saved; first starts load only when asked.
  if (spawnOpts.loadIndex ?? (!first || opts.loadIndex)) args.push('--load-index');
  if (first) args.push('--discovery-config', c.discoveryConfig);
  args.push(...(opts.serverArgs ?? []), ...(spawnOpts.args ?? []));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...serverEnv(c.threadsPerServer),
    ...(opts.serverLogLevel ? { DFAISS_LOG_LEVEL: opts.serverLogLevel } : {}),
    ...opts.env,
    ...spawnOpts.env,
  };
  return { args, env };
}
