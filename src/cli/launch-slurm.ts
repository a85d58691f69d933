/** `dfaiss launch slurm`: submit one SLURM job whose tasks are the index servers. */
import type { Command } from 'commander';
import { DEFAULT_BASE_PORT, launchSlurm, planSlurmJob, renderBatchScript, type SlurmLaunchOptions } from '../launch/slurm.js';
import { intArg } from './args.js';

interface Opts {
  logDir: string;
  discoveryConfig: string;
  saveDir: string;
  numServers: number;
  numServersPerNode: number;
  memGb: number;
  cpusPerNode: number;
  partition: string;
  timeoutMin: number;
  basePort: number;
  metricsPort?: number;
  loadIndex: boolean;
  comment?: string;
  host: string;
  threadsPerServer?: number;
  ranksPerProcess: number;
  dryRun: boolean;
}

export function registerLaunchSlurm(launch: Command): void {
  launch
    .command('slurm')
    .description('submit one SLURM job running the index servers (one srun task each); clients find them through the discovery file')
    .addHelpText('after', `
Example:
  dfaiss launch slurm --log-dir ~/dfaiss-logs --discovery-config ~/discovery.txt --save-dir ~/dfaiss_data \\
      --num-servers 64 --num-servers-per-node 32 --cpus-per-node 64 --mem-gb 400 --partition dev \\
      --base-port 12033 --metrics-port 9100
  # the same 64 servers as 8 Node processes (4 per node) of 8 ranks each
  dfaiss launch slurm ... --num-servers 64 --num-servers-per-node 32 --ranks-per-process 8`)
    .requiredOption('--log-dir <dir>', 'folder for the job logs: <jobid>_<task>.out/.err per server')
    .requiredOption('--discovery-config <file>', 'discovery file on a shared file system (rewritten: count line, then one line per server)')
    .option('--save-dir <dir>', 'storage root of the servers (shared or node-local)', 'distributed_faiss_storage')
    .requiredOption('--num-servers <n>', 'how many servers to run', intArg('--num-servers', 1))
    .option('--num-servers-per-node <n>', 'servers per node (tasks per node)', intArg('--num-servers-per-node', 1), 10)
    .option('--mem-gb <n>', 'memory per node in GB (sbatch --mem)', intArg('--mem-gb', 1), 8)
    .option('--cpus-per-node <n>', 'CPUs per node; each server gets floor(cpus / servers per node)', intArg('--cpus-per-node', 1), 32)
    .requiredOption('--partition <name>', 'SLURM partition')
    .option('--timeout-min <n>', 'job time limit in minutes', intArg('--timeout-min', 1), 60)
    .option('--base-port <n>', 'port of the first server on each node; others use base + local rank', intArg('--base-port', 1, 65535), DEFAULT_BASE_PORT)
    .option('--metrics-port <n>', "serve each server's Prometheus /metrics, /healthz, /readyz on this port + local rank (off by default)", intArg('--metrics-port', 1, 65535))
    .option('--load-index', 'servers load their saved indexes before serving', false)
    .option('--comment <text>', 'sbatch --comment')
    .option('--host <addr>', 'interface the servers bind (their hostname goes into the discovery file when 0.0.0.0)', '0.0.0.0')
    .option('--threads-per-server <n>', 'FAISS threads per server (default: cpus per node / servers per node)', intArg('--threads-per-server', 1, 1024))
    .option('--ranks-per-process <k>', 'servers per Node process (srun task): one `dfaiss server --ranks-per-process k` serves k ranks, each on its own port; must divide --num-servers-per-node', intArg('--ranks-per-process', 1, 4096), 1)
    .option('--dry-run', 'print the batch script and exit without submitting', false)
    .action(async (opts: Opts) => {
      const launchOpts: SlurmLaunchOptions = {
        logDir: opts.logDir,
        discoveryConfig: opts.discoveryConfig,
        saveDir: opts.saveDir,
        numServers: opts.numServers,
        numServersPerNode: opts.numServersPerNode,
        memGb: opts.memGb,
        cpusPerNode: opts.cpusPerNode,
        partition: opts.partition,
        timeoutMin: opts.timeoutMin,
        basePort: opts.basePort,
        metricsPort: opts.metricsPort,
        loadIndex: opts.loadIndex,
        comment: opts.comment,
        host: opts.host,
        threadsPerServer: opts.threadsPerServer,
        ranksPerProcess: opts.ranksPerProcess,
      };
      let job;
      try {
        if (opts.dryRun) {
          process.stdout.write(renderBatchScript(planSlurmJob(launchOpts)));
          return;
        }
        job = await launchSlurm(launchOpts);
      } catch (err) {
        // Bad options and sbatch refusals (EnforcePartLimits) are the user's to fix: no stack.
        const flag = (name: string): string => `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
        const fields = /\b(numServers|numServersPerNode|memGb|cpusPerNode|timeoutMin|basePort|metricsPort|threadsPerServer|ranksPerProcess|logDir|discoveryConfig|saveDir|jobName)\b/g;
        console.error(`dfaiss launch slurm: ${(err as Error).message.replace(fields, flag)}`);
        process.exitCode = 1;
        return;
      }
      const p = job.plan;
      const procs = p.ranksPerProcess === 1 ? '' : ` in ${p.ntasks} processes`;
      console.log(`submitted job ${job.jobId}: ${p.numServers} servers${procs} on ${p.nodes} node(s) of partition ${p.partition}, ports ${p.basePort}+`);
      console.log(`  discovery file: ${p.discoveryConfig}`);
      console.log(`  server logs:    ${job.logPattern}`);
      console.log(`  job log:        ${p.logDir}/${job.jobId}_batch.{out,err}`);
      if (p.metricsPort !== undefined) console.log(`  metrics:        http://<node>:${p.metricsPort}+<local rank>/metrics (also /healthz, /readyz)`);
      console.log(`  stop with:      scancel ${job.jobId}`);
      // The first stdout line alone, for scripts: JOBID=$(dfaiss launch slurm ... | head -1 | awk '{print $3}' | tr -d :)
    });
}
