/**
 * `dfaiss server`: run one index server in this process until SIGINT/SIGTERM, or, with
 * --ranks-per-process K, K of them (ranks R..R+K-1): each its own IndexServer with its own
 * port, metrics port, discovery line, storage sub-folders and FAISS threads, sharing one
 * Node runtime, one copy of the code and one OpenBLAS pool (issue 15, item 3).
 */
import { Option, type Command } from 'commander';
import { ValidationError } from '../errors.js';
import { setOmpNumThreads } from '../native/index.js';
import { IndexServer } from '../server/index-server.js';
import { createLogger, exitAfterFlush } from '../util/logger.js';
import { intArg, intListArg } from './args.js';
import { addServerSecurityOptions, isLoopback, serverSecurityOrExit, type SecurityCliOptions } from './security.js';

export function registerServerCommand(program: Command): void {
  const cmd = program
    .command('server')
    .description('run one index server (holds shards of any number of indexes in RAM)')
    .addHelpText('after', `
Examples:
  echo 1 > /tmp/discovery.txt
  dfaiss server --rank 0 --port 12033 --save-dir ./data --discovery-config /tmp/discovery.txt --metrics-port 9100
  curl -s localhost:9100/metrics | grep dfaiss_requests_total
  # ranks 8-15 in one process, ports 12041-12048, 2 FAISS threads each
  echo 16 > /tmp/discovery.txt
  dfaiss server --rank 8 --ranks-per-process 8 --port 12041 --threads 2 --save-dir ./data --discovery-config /tmp/discovery.txt`)
    .requiredOption('--rank <n>', 'server rank: picks the storage sub-folder {save-dir}/{index}/{rank} (the first rank with --ranks-per-process)', intArg('--rank', 0))
    .option('--ranks-per-process <k>', 'serve ranks rank..rank+k-1 in this one process, each on its own port (port + i), metrics port and storage sub-folder', intArg('--ranks-per-process', 1, 4096), 1)
    .option('--port <n>', 'TCP port (0 = pick a free one); with --ranks-per-process, rank + i listens on port + i, or give one port per rank: p0,p1,...', intListArg('--port', 0, 65535), [0])
    .option('--host <addr>', "interface to bind ('0.0.0.0' to serve other machines)", '127.0.0.1')
    .requiredOption('--save-dir <dir>', 'storage root for index folders')
    .option('--discovery-config <file>', 'append "host,port" to this discovery file once listening')
    .option('--metrics-port <n>', 'serve Prometheus /metrics, /healthz and /readyz over HTTP on this port (0 = a free one; off by default; no auth: counts only)', intArg('--metrics-port', 0, 65535))
    .option('--metrics-host <addr>', 'interface of the metrics port (default: --host)')
    .option('--load-index', 'load every index saved for this rank before serving', false)
    .option('--threads <n>', 'OpenMP/BLAS threads for FAISS, per rank (cores / ranks per machine)', intArg('--threads', 1, 1024), 1)
    .option(
      '--max-buffered-mb <n>',
      'per index, MiB of vectors a shard may hold outside FAISS (waiting for training or their add); adds past it wait, clients resend them after a pause (0 = no bound; default 512, raised to what a per-shard training must gather)',
      intArg('--max-buffered-mb', 0, 1_048_576),
    )
    .option('--train-threads <n>', 'threads for a shared training this server runs for the cluster (default: the cores of this machine)', intArg('--train-threads', 1, 1024))
    // Used by `dfaiss launch local`: stop gracefully when the launcher's pipe closes (it died).
    .addOption(new Option('--stop-on-stdin-close', 'shut down when stdin reaches end of file').hideHelp())
    // Tests: how long a connection may take to complete hello (default 10 s).
    .addOption(new Option('--hello-timeout-ms <ms>', 'handshake deadline per connection').argParser(intArg('--hello-timeout-ms', 1, 600_000)).hideHelp());
  addServerSecurityOptions(cmd)
    .action(async (opts: SecurityCliOptions & { rank: number; ranksPerProcess: number; port: number[]; host: string; saveDir: string; discoveryConfig?: string; metricsPort?: number; metricsHost?: string; loadIndex: boolean; threads: number; maxBufferedMb?: number; trainThreads?: number; stopOnStdinClose?: boolean; helloTimeoutMs?: number }) => {
      const logger = createLogger({ role: 'server' });
      const security = serverSecurityOrExit(cmd, opts, logger);
      logger.info({ auth: security.auth !== undefined, tls: security.tls !== undefined, clientCerts: security.tls?.ca !== undefined, maxFrameBytes: security.maxFrameBytes, maxConnections: security.maxConnections, frameTimeoutMs: security.frameTimeoutMs }, 'security settings');
      if (!security.auth && !isLoopback(opts.host)) {
        logger.warn({ host: opts.host }, 'serving beyond loopback without --secret-file: anyone who can reach this port can read, change and drop indexes (docs/security.md)');
      }
      const k = opts.ranksPerProcess;
      const exitWith = (e: Error): never => {
        // One line that says what to do (a port in use, a bad address...), not a stack trace.
        logger.flush?.();
        process.stderr.write(`dfaiss server: ${process.env.DFAISS_DEBUG ? (e.stack ?? e.message) : e.message}\n`);
        process.exit(1);
      };
      if (opts.port.length !== 1 && opts.port.length !== k) exitWith(new ValidationError('--port', `one port, or ${k} (one per rank)`, opts.port.join(',')));
      for (const [flag, port] of [['--port', opts.port.length === 1 ? opts.port[0] : 0], ['--metrics-port', opts.metricsPort]] as const) {
        if (port && port + k - 1 > 65535) exitWith(new ValidationError(flag, `a port from 1 to ${65536 - k} (${k} ranks listen on ${flag} + 0..${k - 1})`, port));
      }
      const portOf = (i: number): number => (opts.port.length === k ? opts.port[i]! : opts.port[0] ? opts.port[0] + i : 0);
      // Ranks sharing the process share OpenMP's default and OpenBLAS's pool: set them once.
      if (k > 1) setOmpNumThreads(opts.threads);
      const servers = Array.from(
        { length: k },
        (_, i) =>
          new IndexServer(opts.rank + i, opts.saveDir, {
            threads: opts.threads,
            ...(opts.maxBufferedMb !== undefined ? { maxBufferedBytes: opts.maxBufferedMb * 2 ** 20 } : {}),
            ownsProcess: k === 1,
            ...(opts.trainThreads ? { trainThreads: opts.trainThreads } : {}),
            logger,
            ...security,
            ...(opts.helloTimeoutMs ? { helloTimeoutMs: opts.helloTimeoutMs } : {}),
            // Test hook only (tests/cluster/failures.test.ts): see IndexServerOptions.testDieAfterLoggedAdd.
            ...(process.env.DFAISS_TEST_DIE_AFTER_WAL === '1' ? { testDieAfterLoggedAdd: true } : {}),
          }),
      );
      const metricsHost = opts.metricsHost ?? opts.host;
      if (opts.metricsPort !== undefined && !isLoopback(metricsHost)) {
        logger.warn({ metricsHost }, 'the metrics port has no authentication: anyone who can reach it reads request counts, index names and sizes (no vectors or metadata)');
      }
      const plus = (port: number | undefined, i: number): number | undefined => (port ? port + i : port);
      const started = await Promise.allSettled(
        servers.map((server, i) => server.start({ port: portOf(i), host: opts.host, loadIndex: opts.loadIndex, metricsPort: plus(opts.metricsPort, i), metricsHost })),
      );
      const failed = started.find((r) => r.status === 'rejected');
      if (failed) {
        await Promise.allSettled(servers.map((s) => s.stop()));
        exitWith(failed.reason as Error);
      }
      // Published only once every rank listens, in rank order: a process that fails to start
      // one rank leaves no line behind for the others (clients would wait on a dead address).
      if (opts.discoveryConfig) for (const server of servers) await server.publish(opts.discoveryConfig);
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'shutting down');
        Promise.all(servers.map((s) => s.stop())).then(
          () => exitAfterFlush(logger, 0),
          (err: Error) => {
            logger.error({ err: err.message }, 'shutdown failed');
            exitAfterFlush(logger, 1);
          },
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
      // One machine-readable line per rank on stdout: launchers and tests read the bound
      // ports from them (after the signal handlers: whoever reads it may send SIGTERM at once).
      started.forEach((r, i) => {
        const addr = (r as PromiseFulfilledResult<Awaited<ReturnType<IndexServer['start']>>>).value;
        const metrics = addr.metricsPort === undefined ? {} : { metricsPort: addr.metricsPort };
        process.stdout.write(`${JSON.stringify({ event: 'listening', rank: opts.rank + i, host: addr.host, port: addr.port, ...metrics, pid: process.pid })}\n`);
      });
      if (opts.stopOnStdinClose) {
        process.stdin.on('end', () => stop('stdin closed (launcher gone)'));
        process.stdin.on('error', () => stop('stdin closed (launcher gone)'));
        process.stdin.resume();
      }
    });
}
