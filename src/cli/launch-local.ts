/**
 * `dfaiss launch local`: N index servers on this machine, supervised until Ctrl-C / SIGTERM.
 * Human-readable logs (JSON, pino) go to stderr; stdout gets one JSON line per event
 * ({"event":"ready"|"exit"|"up"|"stopped", ...}) for scripts and tests.
 */
import { Option, type Command } from 'commander';
import { resolve } from 'node:path';
import { defaultThreadsPerServer, LocalCluster } from '../launch/local.js';
import { createLogger, exitAfterFlush } from '../util/logger.js';
import { intArg } from './args.js';
import { addServerSecurityOptions, serverSecurityOrExit, type SecurityCliOptions } from './security.js';

interface LaunchLocalOpts extends SecurityCliOptions {
  numServers: number;
  saveDir: string;
  discoveryConfig: string;
  basePort?: number;
  metricsPort?: number;
  host: string;
  loadIndex: boolean;
  threadsPerServer?: number;
  ranksPerProcess: number;
  restartOnCrash: boolean;
  maxRestarts: number;
  restartDelay: number;
  startTimeout: number;
  stopTimeout: number;
}

function emit(event: string, data: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...data })}\n`);
}

/** The security flags again, for each `dfaiss server` (files as absolute paths). */
function securityArgs(o: SecurityCliOptions): string[] {
  const args: string[] = [];
  if (o.secretFile !== undefined) args.push('--secret-file', resolve(o.secretFile));
  if (o.tlsKey !== undefined) args.push('--tls-key', resolve(o.tlsKey));
  if (o.tlsCert !== undefined) args.push('--tls-cert', resolve(o.tlsCert));
  if (o.tlsCa !== undefined) args.push('--tls-ca', resolve(o.tlsCa));
  if (o.maxFrameMb !== undefined) args.push('--max-frame-mb', String(o.maxFrameMb));
  if (o.maxConnections !== undefined) args.push('--max-connections', String(o.maxConnections));
  if (o.frameTimeoutMs !== undefined) args.push('--frame-timeout-ms', String(o.frameTimeoutMs));
  return args;
}

export function registerLaunchLocal(launch: Command): void {
  const cmd = launch
    .command('local')
    .description('start N index servers on this machine, write the discovery file, supervise them until Ctrl-C / SIGTERM')
    .addHelpText('after', `
Examples:
  dfaiss launch local --num-servers 4 --save-dir ./data --discovery-config /tmp/discovery.txt
  dfaiss launch local --num-servers 4 --save-dir ./data --discovery-config /tmp/discovery.txt \\
      --base-port 12033 --metrics-port 9100 --load-index --restart-on-crash
  # 32 servers in 4 Node processes of 8 ranks
  dfaiss launch local --num-servers 32 --ranks-per-process 8 --save-dir ./data --discovery-config /tmp/discovery.txt`)
    .requiredOption('--num-servers <n>', 'how many servers (ranks)', intArg('--num-servers', 1, 4096))
    .requiredOption('--save-dir <dir>', 'storage root shared by the servers ({save-dir}/{index}/{rank})')
    .requiredOption('--discovery-config <file>', 'discovery file to write: the count line, then one "host,port" line per server')
    .option('--base-port <port>', 'server i listens on base-port + i (default: free ports picked by the OS)', intArg('--base-port', 1, 65535))
    .option('--host <addr>', "interface the servers bind ('0.0.0.0' to serve other machines)", '127.0.0.1')
    .option('--metrics-port <port>', "serve each server's Prometheus /metrics, /healthz, /readyz: server i on this port + i (0 = a free port each; off by default)", intArg('--metrics-port', 0, 65535))
    .option('--load-index', 'servers load their saved indexes before serving', false)
    .option('--threads-per-server <n>', 'FAISS threads per server (default: max(1, floor(cores / servers)))', intArg('--threads-per-server', 1, 1024))
    .option('--ranks-per-process <k>', 'servers per Node process: each `dfaiss server --ranks-per-process k` serves k ranks, each on its own port (a crash or restart takes all k)', intArg('--ranks-per-process', 1, 4096), 1)
    .option('--restart-on-crash', 'restart a server that exits on its own (with --load-index)', false)
    .option('--max-restarts <n>', 'restarts allowed per server per minute before giving up on it', intArg('--max-restarts', 0, 1000), 5)
    .option('--stop-timeout <sec>', 'seconds a server gets to save and exit after SIGTERM before SIGKILL', intArg('--stop-timeout', 1, 86_400), 60)
    .option('--start-timeout <sec>', 'seconds a server may take to listen (loading big indexes takes a while)', intArg('--start-timeout', 1, 86_400), 300)
    .addOption(new Option('--restart-delay <ms>', 'first restart delay (doubles per recent restart)').argParser(intArg('--restart-delay', 0, 60_000)).default(500).hideHelp());
  // Passed on to every server (the secret itself can come from DFAISS_SECRET, which they inherit).
  addServerSecurityOptions(cmd).action(async (opts: LaunchLocalOpts) => {
      if (opts.basePort !== undefined && opts.basePort + opts.numServers - 1 > 65535) {
        launch.error(`error: --base-port ${opts.basePort} + --num-servers ${opts.numServers} go past port 65535`);
      }
      const logger = createLogger({ role: 'launcher' });
      serverSecurityOrExit(cmd, opts, logger); // bad key/cert/secret files stop the launch here, not in N servers
      let cluster: LocalCluster;
      try {
        cluster = new LocalCluster({
          numServers: opts.numServers,
          saveDir: opts.saveDir,
          discoveryConfig: opts.discoveryConfig,
          basePort: opts.basePort,
          metricsPort: opts.metricsPort,
          host: opts.host,
          loadIndex: opts.loadIndex,
          threadsPerServer: opts.threadsPerServer ?? defaultThreadsPerServer(opts.numServers),
          ranksPerProcess: opts.ranksPerProcess,
          restartOnCrash: opts.restartOnCrash,
          maxRestarts: opts.maxRestarts,
          restartDelayMs: opts.restartDelay,
          startTimeoutMs: opts.startTimeout * 1000,
          stopTimeoutMs: opts.stopTimeout * 1000,
          serverArgs: securityArgs(opts),
          logger,
        });
      } catch (err) {
        // Bad option combinations (e.g. metrics ports overlapping server ports): one line, named as flags.
        const flag = (name: string): string => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
        process.stderr.write(`dfaiss launch local: ${(err as Error).message.replace(/\b(basePort|metricsPort|numServers|threadsPerServer|ranksPerProcess)\b/g, flag)}\n`);
        process.exit(2);
      }

      let signals = 0;
      let exitCode = 0;
      const shutdown = (reason: string): void => {
        signals++;
        if (signals > 1) {
          logger.warn({ reason }, 'second signal: killing the servers now');
          cluster.kill();
          return;
        }
        logger.info({ reason }, 'stopping the servers (snapshots are saved; a second Ctrl-C kills them)');
        cluster.stop().then(
          () => {
            emit('stopped', { servers: cluster.servers.map(({ rank, status }) => ({ rank, status })) });
            exitAfterFlush(logger, exitCode);
          },
          (err: Error) => {
            logger.error({ err: err.message }, 'stop failed');
            exitAfterFlush(logger, 1);
          },
        );
      };
      process.on('SIGINT', () => shutdown('SIGINT'));
      process.on('SIGTERM', () => shutdown('SIGTERM'));
      process.on('SIGHUP', () => shutdown('SIGHUP'));

      cluster.on('exit', (ev) => emit('exit', { ...ev }));
      cluster.on('up', (s) => emit('up', { rank: s.rank, host: s.host, port: s.port, pid: s.pid, restarts: s.restarts, ...(s.metricsPort ? { metricsPort: s.metricsPort } : {}) }));
      cluster.on('giveUp', (ev) => emit('give-up', { ...ev }));
      cluster.on('allDown', () => {
        logger.error('every server is down and none will be restarted: exiting');
        exitCode = 1;
        shutdown('all servers down');
      });

      try {
        await cluster.start();
      } catch (err) {
        if (signals > 0) return; // shutting down already: that path exits
        logger.error({ err: (err as Error).message }, 'the local cluster did not start');
        process.stderr.write(`dfaiss launch local: ${(err as Error).message}\n`);
        process.exit(1);
      }
      emit('ready', {
        discovery: cluster.discoveryConfig,
        saveDir: cluster.saveDir,
        threadsPerServer: cluster.threadsPerServer,
        launcherPid: process.pid,
        servers: cluster.servers.map(({ rank, host, port, pid, metricsPort }) => ({ rank, host, port, pid, ...(metricsPort ? { metricsPort } : {}) })),
      });
      // Serve until a signal arrives (the child processes keep the event loop alive).
    });
}
