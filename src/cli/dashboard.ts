/** `dfaiss dashboard`: serve the live web dashboard of a cluster until Ctrl-C / SIGTERM. */
import type { Command } from 'commander';
import { Dashboard } from '../dashboard/server.js';
import { intArg } from './args.js';
import { addClientSecurityOptions, clientSecurity, secondsArg, type ClientSecurityCliOptions } from './common.js';
import { isLoopback } from './security.js';

interface DashboardCliOpts extends ClientSecurityCliOptions {
  discoveryConfig: string;
  port: number;
  host: string;
  interval: number;
  timeout: number;
}

export function registerDashboardCommand(program: Command): void {
  const cmd = program
    .command('dashboard')
    .description('serve a live web page of the cluster: servers (up/down, memory, connections, QPS, latency), indexes (state per shard, ntotal, buffered, training) and a search box')
    .requiredOption('--discovery-config <file>', 'discovery file of the cluster (re-read every poll: servers may come later or move) (alias: --discover)')
    .option('--port <n>', 'HTTP port of the dashboard (0 = a free one)', intArg('--port', 0, 65535), 8080)
    .option('--host <addr>', 'interface to bind; the page runs searches and shows stored metadata, so keep it on loopback or behind an authenticating proxy', '127.0.0.1')
    .option('--interval <sec>', 'seconds between polls of the servers', secondsArg('--interval', 0.1), 1)
    .option('--timeout <sec>', 'deadline of each status call (a server slower than this shows as down)', secondsArg('--timeout', 0.1), 3)
    .addHelpText('after', `
Examples:
  dfaiss dashboard --discovery-config /tmp/discovery.txt                 # then open http://127.0.0.1:8080/
  ssh -L 8080:127.0.0.1:8080 login-node dfaiss dashboard --discovery-config ~/discovery.txt   # a SLURM cluster, from your laptop`);
  addClientSecurityOptions(cmd).action(async (o: DashboardCliOpts) => {
    if (!isLoopback(o.host)) {
      process.stderr.write(`dfaiss dashboard: warning: serving on ${o.host} without authentication: anyone who can reach it can run searches and read stored metadata\n`);
    }
    const dashboard = new Dashboard({ discoveryConfig: o.discoveryConfig, intervalMs: o.interval * 1000, statusTimeoutMs: o.timeout * 1000, client: clientSecurity(o) });
    let addr;
    try {
      addr = await dashboard.listen(o.host, o.port);
    } catch (err) {
      await dashboard.close().catch(() => {});
      process.stderr.write(`dfaiss dashboard: ${(err as Error).message}\n`);
      process.exit(1);
    }
    // Machine-readable for scripts and tests; the URL for people.
    process.stdout.write(`${JSON.stringify({ event: 'listening', host: addr.host, port: addr.port, url: addr.url, pid: process.pid })}\n`);
    process.stderr.write(`dfaiss dashboard: open ${addr.url} (cluster ${o.discoveryConfig}; Ctrl-C stops)\n`);
    let stopping = false;
    const stop = (): void => {
      if (stopping) process.exit(130);
      stopping = true;
      dashboard.close().then(() => process.exit(0), () => process.exit(1));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
