/**
 * The SLURM launcher: one sbatch job whose srun tasks are the index servers.
 *
 * Like the original's server_launcher.py (submitit): nodes = ceil(servers / per node),
 * cpus per task = floor(cpus per node / servers per node), task rank = SLURM_PROCID,
 * port = base port + SLURM_LOCALID, and every task appends "host,port" to the discovery
 * file under an NFS-safe lock (the server does this itself, see nfs-lock.ts).
 * With ranksPerProcess K, each task is one `dfaiss server --ranks-per-process K` process
 * serving ranks SLURM_PROCID*K .. +K-1 on ports base + SLURM_LOCALID*K + 0..K-1, so 32
 * servers per node need 32 / K Node processes (issue 15, item 3).
 */
import { spawn } from 'node:child_process';
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ValidationError } from '../errors.js';
import { serverNodeArgs } from './server-process.js';

/** The original's default port (distributed_faiss.rpc.DEFAULT_PORT). */
export const DEFAULT_BASE_PORT = 12032;

export interface SlurmLaunchOptions {
  /** Folder for the job's logs: `<jobid>_batch.{out,err}` and one `<jobid>_<task>.{out,err}` per server. */
  logDir: string;
  /** Discovery file (on a file system every node and client sees); truncated to the count line. */
  discoveryConfig: string;
  /** Storage root of the servers. @default 'distributed_faiss_storage' */
  saveDir?: string;
  numServers: number;
  /** @default 10 */
  numServersPerNode?: number;
  /** Memory per node, in GB (sbatch --mem). @default 8 */
  memGb?: number;
  /** @default 32 */
  cpusPerNode?: number;
  partition: string;
  /** Job time limit in minutes. @default 60 */
  timeoutMin?: number;
  /** Server ports are base port + local rank on the node. @default 12032 */
  basePort?: number;
  /** Servers load their saved indexes before serving. @default false */
  loadIndex?: boolean;
  /** Each server serves /metrics, /healthz, /readyz on this port + its local rank on the node. @default off */
  metricsPort?: number;
  /** sbatch --comment. */
  comment?: string;
  /** Interface the servers bind. @default '0.0.0.0' (clients are on other machines) */
  host?: string;
  /** FAISS threads per server. @default floor(cpusPerNode / numServersPerNode) */
  threadsPerServer?: number;
  /** Servers (ranks) per srun task, i.e. per Node process; must divide numServersPerNode. @default 1 */
  ranksPerProcess?: number;
  /** Job name. @default 'dfaiss' */
  jobName?: string;
  /** Node binary the tasks run. @default process.execPath */
  nodePath?: string;
  /** The dfaiss CLI entry the tasks run. @default this installation's dist/cli/main.js */
  cliPath?: string;
}

export interface SlurmPlan {
  nodes: number;
  tasksPerNode: number;
  ntasks: number;
  cpusPerTask: number;
  threadsPerServer: number;
  numServers: number;
  ranksPerProcess: number;
  memGb: number;
  timeoutMin: number;
  basePort: number;
  metricsPort: number | undefined;
  partition: string;
  host: string;
  logDir: string;
  discoveryConfig: string;
  saveDir: string;
  loadIndex: boolean;
  comment: string | undefined;
  jobName: string;
  nodePath: string;
  cliPath: string;
}

/** Computes the job's shape and validates the options (absolute paths, sane numbers). */
export function planSlurmJob(opts: SlurmLaunchOptions): SlurmPlan {
  const int = (name: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (!Number.isSafeInteger(v) || v < min || v > max) throw new ValidationError(name, `an integer from ${min} to ${max}`, v);
    return v;
  };
  const numServers = int('numServers', opts.numServers, 1);
  const perNode = int('numServersPerNode', opts.numServersPerNode ?? 10, 1);
  const cpusPerNode = int('cpusPerNode', opts.cpusPerNode ?? 32, 1);
  if (cpusPerNode < perNode) {
    throw new ValidationError('cpusPerNode', `at least numServersPerNode (${perNode}): each server needs one CPU`, cpusPerNode);
  }
  const perProcess = int('ranksPerProcess', opts.ranksPerProcess ?? 1, 1, perNode);
  if (perNode % perProcess !== 0) throw new ValidationError('ranksPerProcess', `a divisor of numServersPerNode (${perNode})`, perProcess);
  const tasksPerNode = Math.ceil(Math.min(perNode, numServers) / perProcess);
  // A task serves perProcess ranks, so it gets their CPUs.
  const cpusPerTask = Math.floor(cpusPerNode / perNode) * perProcess;
  const basePort = int('basePort', opts.basePort ?? DEFAULT_BASE_PORT, 1, 65535);
  if (basePort + Math.min(perNode, numServers) - 1 > 65535) {
    throw new ValidationError('basePort', `at most ${65536 - Math.min(perNode, numServers)} (ports are base + local rank)`, basePort);
  }
  let metricsPort: number | undefined;
  if (opts.metricsPort !== undefined) {
    const span = Math.min(perNode, numServers);
    metricsPort = int('metricsPort', opts.metricsPort, 1, 65536 - span);
    if (metricsPort < basePort + span && basePort < metricsPort + span) {
      throw new ValidationError('metricsPort', `a range apart from the server ports ${basePort}-${basePort + span - 1} (both are + local rank)`, metricsPort);
    }
  }
  for (const [name, v] of [['partition', opts.partition], ['comment', opts.comment ?? ''], ['jobName', opts.jobName ?? 'dfaiss']] as const) {
    if (/["\n\r\\]/.test(v)) throw new ValidationError(name, 'text without quotes, backslashes or line breaks', v);
  }
  if (opts.partition.trim() === '') throw new ValidationError('partition', 'a SLURM partition name', opts.partition);
  for (const [name, v] of [['logDir', opts.logDir], ['discoveryConfig', opts.discoveryConfig], ['saveDir', opts.saveDir ?? '']] as const) {
    if (/["\n\r\\]/.test(v)) throw new ValidationError(name, 'a path without quotes, backslashes or line breaks', v);
  }
  return {
    nodes: Math.ceil(numServers / perNode),
    tasksPerNode,
    ntasks: Math.ceil(numServers / perProcess),
    cpusPerTask,
    threadsPerServer: int('threadsPerServer', opts.threadsPerServer ?? Math.floor(cpusPerNode / perNode), 1, 1024),
    numServers,
    ranksPerProcess: perProcess,
    memGb: int('memGb', opts.memGb ?? 8, 1),
    timeoutMin: int('timeoutMin', opts.timeoutMin ?? 60, 1),
    basePort,
    metricsPort,
    partition: opts.partition,
    host: opts.host ?? '0.0.0.0',
    logDir: resolve(opts.logDir),
    discoveryConfig: resolve(opts.discoveryConfig),
    saveDir: resolve(opts.saveDir ?? 'distributed_faiss_storage'),
    loadIndex: opts.loadIndex ?? false,
    comment: opts.comment,
    jobName: opts.jobName ?? 'dfaiss',
    nodePath: opts.nodePath ?? process.execPath,
    cliPath: opts.cliPath ?? fileURLToPath(new URL('../cli/main.js', import.meta.url)),
  };
}

/** Single-quotes a word for bash. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The batch script sbatch runs (once, on the first node); its srun starts one server per task. */
export function renderBatchScript(plan: SlurmPlan): string {
  const pct = (p: string): string => p.replace(/%/g, '%%'); // literal % in Slurm file patterns
  const sb = [
    `--job-name=${plan.jobName}`,
    `--nodes=${plan.nodes}`,
    `--ntasks=${plan.ntasks}`,
    `--ntasks-per-node=${plan.tasksPerNode}`,
    `--cpus-per-task=${plan.cpusPerTask}`,
    `--mem=${plan.memGb}G`,
    `--partition=${plan.partition}`,
    `--time=${plan.timeoutMin}`,
    ...(plan.comment ? [`--comment="${plan.comment}"`] : []),
    `--output="${pct(plan.logDir)}/%j_batch.out"`,
    `--error="${pct(plan.logDir)}/%j_batch.err"`,
  ];
  // One line per flag and value, for reading.
  const serverFlags: string[][] = [
    ['--host', plan.host],
    ['--save-dir', plan.saveDir],
    ['--discovery-config', plan.discoveryConfig],
    ['--threads', String(plan.threadsPerServer)],
    ...(plan.loadIndex ? [['--load-index']] : []),
  ];
  // `bash -c 'exec "$@" ...' name args...`: the paths are quoted once, and exec leaves the
  // server itself as srun's task. It must stay in the foreground: with proctrack/linuxproc
  // a process that daemonises escapes scancel.
  const k = plan.ranksPerProcess;
  const local = k === 1 ? 'SLURM_LOCALID' : `SLURM_LOCALID * ${k}`;
  const metrics = plan.metricsPort === undefined ? '' : ` --metrics-port "$((${plan.metricsPort} + ${local}))"`;
  // K ranks per task: ranks PROCID*K.., the last task of an uneven count serves the rest.
  const ranks = k === 1 ? '"$SLURM_PROCID"' : `"$((SLURM_PROCID * ${k}))" --ranks-per-process "$((${plan.numServers} - SLURM_PROCID * ${k} < ${k} ? ${plan.numServers} - SLURM_PROCID * ${k} : ${k}))"`;
  // OpenBLAS sizes its pool when the addon loads: to the FAISS threads, not the node's cores.
  const task = `OPENBLAS_NUM_THREADS=\${OPENBLAS_NUM_THREADS:-${plan.threadsPerServer}} OMP_WAIT_POLICY=\${OMP_WAIT_POLICY:-PASSIVE} exec "$@" --rank ${ranks} --port "$((${plan.basePort} + ${local}))"${metrics}`;
  const line = (words: string[]): string => words.map(shellQuote).join(' ');
  return [
    '#!/bin/bash',
    '# dfaiss index servers: one srun task per server (written by `dfaiss launch slurm`).',
    ...sb.map((o) => `#SBATCH ${o}`),
    '',
    k === 1 ? 'echo "dfaiss: job $SLURM_JOB_ID, $SLURM_NTASKS servers on $SLURM_JOB_NODELIST"' : `echo "dfaiss: job $SLURM_JOB_ID, ${plan.numServers} servers in $SLURM_NTASKS processes on $SLURM_JOB_NODELIST"`,
    '# srun of Slurm 22.05 does not inherit --cpus-per-task from the job: pass it again.',
    [
      'srun',
      `--cpus-per-task=${plan.cpusPerTask}`,
      line([`--output=${pct(plan.logDir)}/%j_%t.out`]),
      line([`--error=${pct(plan.logDir)}/%j_%t.err`]),
      `/bin/bash -c ${shellQuote(task)} dfaiss-server`,
      line([plan.nodePath, ...serverNodeArgs(), plan.cliPath, 'server']),
      ...serverFlags.map(line),
    ].join(' \\\n  '),
    '',
  ].join('\n');
}

export interface SubmittedJob {
  jobId: string;
  plan: SlurmPlan;
  script: string;
  /** Log file pattern of the servers, with `<task>` for the task number. */
  logPattern: string;
}

/**
 * Writes the count line to the discovery file (truncating it), creates the log folder
 * and submits the job with `sbatch --parsable`. Resolves once sbatch accepted the job.
 */
export async function launchSlurm(opts: SlurmLaunchOptions, run: { sbatch?: string } = {}): Promise<SubmittedJob> {
  const plan = planSlurmJob(opts);
  const script = renderBatchScript(plan);
  await mkdir(plan.logDir, { recursive: true });
  await mkdir(plan.saveDir, { recursive: true });
  await writeFile(plan.discoveryConfig, `${plan.numServers}\n`);
  // A lock left by a killed server of an earlier job would only delay this one.
  await unlink(`${plan.discoveryConfig}.lock`).catch(() => undefined);
  const out = await runSbatch(run.sbatch ?? 'sbatch', script);
  const jobId = out.trim().split(';')[0]!;
  if (!/^\d+$/.test(jobId)) throw new Error(`sbatch printed no job id: ${JSON.stringify(out)}`);
  return { jobId, plan, script, logPattern: `${plan.logDir}/${jobId}_<task>.{out,err}` };
}

function runSbatch(sbatch: string, script: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const proc = spawn(sbatch, ['--parsable'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    proc.on('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error(`${sbatch} not found: is this a SLURM submit host (slurm-client installed)?`) : err),
    );
    proc.on('close', (code) => {
      if (code === 0) resolvePromise(stdout);
      else reject(new Error(`sbatch failed (exit code ${code}): ${stderr.trim() || stdout.trim()}`));
    });
    proc.stdin.end(script);
  });
}
