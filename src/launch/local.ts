/**
 * LocalCluster: N `dfaiss server` child processes on this machine, supervised.
 *
 * - Each child gets rank i, port basePort + i (or 0: the OS picks one), its own process
 *   group (a Ctrl-C in the terminal reaches only the launcher, which then stops the children
 *   in order) and a stdin pipe from the launcher: when the launcher dies, even by SIGKILL,
 *   the pipe closes and the children stop themselves (`--stop-on-stdin-close`).
 * - The discovery file gets the count line first; each server appends its own `host,port`
 *   line once it listens (its --discovery-config), as the original's servers do.
 * - A child that exits on its own is reported; with restartOnCrash it is started again with
 *   --load-index on the same port, at most maxRestarts times per restartWindowMs, with a
 *   doubling delay. If it has to move to another port the discovery file is rewritten.
 * - stop(): SIGTERM to every child (the server saves snapshots on graceful shutdown), wait
 *   up to stopTimeoutMs, then SIGKILL whatever is left.
 * - ranksPerProcess K: a child serves ranks i*K..i*K+K-1 (`--ranks-per-process`); its ranks
 *   share its pid, exit and restart (on their own ports again).
 * - killServer / restartServer: one server stopped by signal, and started again on the same
 *   storage (with extra arguments), for tests and operators; the discovery file follows it.
 *
 * The one launcher of local servers: `dfaiss launch local`, the benchmark and the tests use it.
 * Its public types are in local-api.ts; option checks, defaults and each server's command line in local-options.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseDiscovery } from '../discovery/discovery-file.js';
import { DfaissError, TimeoutError, ValidationError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { LocalClusterEvents, LocalClusterOptions, LocalServerInfo } from './local-api.js';
import { checkLocalClusterOptions, defaultCliPath, defaultThreadsPerServer, serverCommand, type SpawnRequest } from './local-options.js';
import { serverNodeArgs } from './server-process.js';

export type { LocalClusterEvents, LocalClusterOptions, LocalServerInfo, ServerExitEvent, ServerStatus } from './local-api.js';
export { defaultCliPath, defaultThreadsPerServer } from './local-options.js';

interface Slot {
  info: LocalServerInfo;
  proc: ChildProcess | null;
  exited: Promise<void> | null;
  restartTimes: number[];
  restartTimer: NodeJS.Timeout | null;
  /** The last restart attempt died before listening (maybe its port was taken). */
  restartFailed: boolean;
  tail: string[];
}

const TAIL_LINES = 50;

export class LocalCluster extends EventEmitter<LocalClusterEvents> {
  readonly numServers: number;
  readonly saveDir: string;
  readonly discoveryConfig: string;
  readonly threadsPerServer: number;
  readonly ranksPerProcess: number;
  private readonly opts: LocalClusterOptions;
  private readonly host: string;
  private readonly log: Logger;
  private readonly cli: string;
  private readonly slots: Slot[] = [];
  private phase: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new';
  private stopPromise: Promise<void> | null = null;

  constructor(opts: LocalClusterOptions) {
    super();
    checkLocalClusterOptions(opts);
    const { numServers } = opts;
    this.opts = opts;
    this.numServers = numServers;
    this.saveDir = resolve(opts.saveDir);
    this.discoveryConfig = resolve(opts.discoveryConfig);
    this.host = opts.host ?? '127.0.0.1';
    this.threadsPerServer = opts.threadsPerServer ?? defaultThreadsPerServer(numServers);
    this.ranksPerProcess = opts.ranksPerProcess ?? 1;
    this.log = opts.logger ?? silentLogger;
    this.cli = opts.cliPath ?? defaultCliPath();
  }

  /** A snapshot of every server: rank, address, pid, status, restarts. */
  get servers(): LocalServerInfo[] {
    return this.slots.map((s) => ({ ...s.info }));
  }

  /** The running process of server `rank` (null when it has none). */
  process(rank: number): ChildProcess | null {
    return this.slots[rank]?.proc ?? null;
  }

  /**
   * Sends `signal` to server `rank` and resolves once it has exited. Its exit is reported
   * (the 'exit' event) and, with restartOnCrash, it is restarted as after a crash.
   */
  async killServer(rank: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const slot = this.slot(rank);
    const proc = slot.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill(signal);
    await slot.exited;
  }

  /**
   * Starts server `rank` again on the same storage (after killServer, or a crash without
   * restartOnCrash) with `args` added to its command line (e.g. ['--load-index'], or
   * ['--port', p] to keep its port) and `env` to its environment. Resolves once it listens;
   * the discovery file is rewritten when its port changed.
   */
  async restartServer(rank: number, opts: { args?: string[]; env?: Record<string, string> } = {}): Promise<LocalServerInfo> {
    if (this.phase !== 'running') throw new DfaissError(`the cluster is ${this.phase}: restartServer works on a running cluster`);
    const slot = this.slot(rank);
    if (slot.proc && slot.proc.exitCode === null && slot.proc.signalCode === null) throw new DfaissError(`server ${rank} is still running (killServer first)`);
    if (slot.restartTimer) clearTimeout(slot.restartTimer);
    slot.restartTimer = null;
    const group = this.groupOf(slot); // its process's other ranks come back with it
    for (const s of group) s.info.restarts++;
    await this.spawnServer(group, group.map(() => 0), { first: false, loadIndex: false, args: opts.args ?? [], env: opts.env ?? {} });
    return { ...slot.info };
  }

  private slot(rank: number): Slot {
    const slot = this.slots[rank];
    if (!slot) throw new ValidationError('rank', `a server rank from 0 to ${this.numServers - 1}`, rank);
    return slot;
  }

  /** The last log lines of a server (serverLogs: 'capture' only). */
  logTail(rank: number): string[] {
    return [...(this.slots[rank]?.tail ?? [])];
  }

  /**
   * Writes the count line, starts every server and resolves once all listen and the
   * discovery file lists them. If one fails to start, the others are stopped and this rejects.
   */
  async start(): Promise<LocalServerInfo[]> {
    if (this.phase !== 'new') throw new DfaissError('this LocalCluster was already started; create a new one');
    this.phase = 'starting';
    await mkdir(this.saveDir, { recursive: true });
    await mkdir(dirname(this.discoveryConfig), { recursive: true });
    await writeFile(this.discoveryConfig, `${this.numServers}\n`);
    for (let rank = 0; rank < this.numServers; rank++) {
      this.slots.push({
        info: { rank, host: this.host, port: 0, pid: 0, status: 'starting', restarts: 0 },
        proc: null,
        exited: null,
        restartTimes: [],
        restartTimer: null,
        restartFailed: false,
        tail: [],
      });
    }
    this.log.info(
      { numServers: this.numServers, saveDir: this.saveDir, discovery: this.discoveryConfig, threadsPerServer: this.threadsPerServer, basePort: this.opts.basePort ?? null },
      'starting local cluster',
    );
    const started = await Promise.allSettled(this.groups().map((group) => this.spawnServer(group, group.map((slot) => this.fixedPort(slot.info.rank)), { first: true })));
    const failed = started.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) {
      await this.stop();
      throw failed.reason;
    }
    // Every server has appended its line by now (it writes before it reports listening).
    const { servers } = parseDiscovery(await readFile(this.discoveryConfig, 'utf8'), this.discoveryConfig);
    if (servers.length < this.numServers) {
      await this.stop();
      throw new DfaissError(`${this.discoveryConfig} lists ${servers.length} of ${this.numServers} servers after all started: is another launcher writing to it?`);
    }
    if (this.phase === 'starting') this.phase = 'running';
    this.log.info({ servers: this.servers.map(({ rank, host, port, pid }) => ({ rank, host, port, pid })) }, 'local cluster ready');
    return this.servers;
  }

  /**
   * SIGTERM to every server, SIGKILL to those still running after stopTimeoutMs. Resolves
   * when every child has exited. Safe to call more than once.
   */
  stop(): Promise<void> {
    this.stopPromise ??= this.doStop();
    return this.stopPromise;
  }

  /** SIGKILL to every server now (a second Ctrl-C). */
  kill(): void {
    for (const slot of this.slots) {
      if (slot.proc && slot.proc.exitCode === null && slot.proc.signalCode === null) slot.proc.kill('SIGKILL');
    }
  }

  private async doStop(): Promise<void> {
    this.phase = 'stopping';
    for (const slot of this.slots) {
      if (slot.restartTimer) clearTimeout(slot.restartTimer);
      slot.restartTimer = null;
    }
    const timeoutMs = this.opts.stopTimeoutMs ?? 60_000;
    await Promise.all(
      this.slots.map(async (slot) => {
        const proc = slot.proc;
        if (!proc || !slot.exited) {
          slot.info.status = 'stopped';
          return;
        }
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill('SIGTERM');
          let timer: NodeJS.Timeout | undefined;
          const timedOut = await Promise.race([
            slot.exited.then(() => false),
            new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
          ]);
          clearTimeout(timer);
          if (timedOut) {
            this.log.warn({ rank: slot.info.rank, pid: proc.pid, timeoutMs }, 'server did not stop in time: SIGKILL');
            proc.kill('SIGKILL');
            await slot.exited;
          }
        } else {
          await slot.exited;
        }
        slot.info.status = 'stopped';
        slot.info.pid = 0;
      }),
    );
    this.phase = 'stopped';
    this.log.info('local cluster stopped');
  }

  /** The slots of each process: ranks i*K .. i*K+K-1. */
  private groups(): Slot[][] {
    const k = this.ranksPerProcess;
    return Array.from({ length: Math.ceil(this.slots.length / k) }, (_, i) => this.slots.slice(i * k, i * k + k));
  }

  /** The slots sharing `slot`'s process. */
  private groupOf(slot: Slot): Slot[] {
    return this.groups()[Math.floor(slot.info.rank / this.ranksPerProcess)]!;
  }

  private fixedPort(rank: number): number {
    return this.opts.basePort === undefined ? 0 : this.opts.basePort + rank;
  }

  /** Starts one server process for the ranks of `group` (see serverCommand) and resolves once all of them listen. */
  private spawnServer(group: Slot[], ports: number[], spawnOpts: SpawnRequest): Promise<void> {
    const { first } = spawnOpts;
    const lead = group[0]!;
    const { rank } = lead.info;
    const label = group.length === 1 ? `server ${rank}` : `servers ${rank}-${rank + group.length - 1}`;
    const cluster = { opts: this.opts, cli: this.cli, host: this.host, saveDir: this.saveDir, discoveryConfig: this.discoveryConfig, threadsPerServer: this.threadsPerServer, ranksPerProcess: this.ranksPerProcess, log: this.log };
    const { args, env } = serverCommand(cluster, group.map((slot) => slot.info), ports, spawnOpts);
    const capture = this.opts.serverLogs === 'capture';
    const proc = spawn(process.execPath, [...serverNodeArgs(), ...args], {
      stdio: ['pipe', 'pipe', capture ? 'pipe' : 'inherit'],
      detached: true, // own process group: the terminal's Ctrl-C reaches only the launcher
      env,
    });
    const exited = new Promise<void>((resolveExit) => proc.once('exit', () => resolveExit()));
    for (const slot of group) {
      slot.proc = proc;
      slot.info.pid = proc.pid ?? 0;
      slot.info.status = first ? 'starting' : 'restarting';
      slot.exited = exited;
    }
    proc.stdin!.on('error', () => {}); // EPIPE when the child is gone
    if (capture) {
      createInterface({ input: proc.stderr! }).on('line', (line) => {
        lead.tail.push(line);
        if (lead.tail.length > TAIL_LINES) lead.tail.shift();
      });
    }
    const timeoutMs = this.opts.startTimeoutMs ?? 300_000;

    return new Promise<void>((resolveStart, rejectStart) => {
      let up = 0;
      let moved = false;
      const listening = (): boolean => up === group.length;
      const timer = setTimeout(() => {
        if (listening()) return;
        proc.kill('SIGKILL');
        rejectStart(new TimeoutError(`${label} did not listen within ${timeoutMs} ms${this.tailHint(lead)}`));
      }, timeoutMs);
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        let ev: { event?: string; rank?: number; host?: string; port?: number; metricsPort?: number };
        try {
          ev = JSON.parse(line) as typeof ev;
        } catch {
          return;
        }
        if (ev.event !== 'listening' || listening() || typeof ev.port !== 'number') return;
        const slot = group.find((s) => s.info.rank === (ev.rank ?? rank));
        if (!slot || slot.info.status === 'up') return;
        up++;
        slot.restartFailed = false;
        moved ||= !first && slot.info.port !== ev.port;
        slot.info.port = ev.port;
        if (typeof ev.metricsPort === 'number') slot.info.metricsPort = ev.metricsPort;
        slot.info.host = advertisedHost(ev.host ?? this.host);
        slot.info.status = 'up';
        this.log.info({ rank: slot.info.rank, pid: proc.pid, host: slot.info.host, port: ev.port, restarts: slot.info.restarts }, first ? 'server up' : 'server restarted');
        if (!listening()) return;
        clearTimeout(timer);
        const after = moved ? this.rewriteDiscovery() : Promise.resolve();
        after.then(
          () => {
            for (const s of group) this.emit('up', { ...s.info });
            resolveStart();
          },
          (err: Error) => {
            this.log.error({ err: err.message }, 'could not rewrite the discovery file');
            resolveStart();
          },
        );
      });
      proc.once('error', (err) => {
        clearTimeout(timer);
        if (!listening()) rejectStart(new DfaissError(`cannot start ${label}: ${err.message}`));
      });
      proc.once('exit', (code, signal) => {
        clearTimeout(timer);
        const wasListening = listening();
        if (!wasListening) {
          if (!first) for (const s of group) s.restartFailed = true;
          const reason = signal ? `signal ${signal}` : `code ${code}`;
          rejectStart(new DfaissError(`${label} exited with ${reason} before listening${this.tailHint(lead)}`));
        }
        this.onExit(group, proc, code, signal, wasListening);
      });
    });
  }

  /** The process of `group` exited: report each of its ranks, and restart them together when asked. */
  private onExit(group: Slot[], proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null, wasListening: boolean): void {
    const lead = group[0]!;
    if (lead.proc !== proc) return;
    for (const slot of group) slot.info.pid = 0;
    if (this.phase === 'stopping' || this.phase === 'stopped') return;
    if (this.phase === 'starting' && !wasListening) {
      for (const slot of group) slot.info.status = 'down';
      return; // start() reports it
    }
    const restart = this.opts.restartOnCrash === true;
    const now = Date.now();
    const windowMs = this.opts.restartWindowMs ?? 60_000;
    // The group's restarts are counted on its first rank.
    lead.restartTimes = lead.restartTimes.filter((t) => now - t < windowMs);
    const maxRestarts = this.opts.maxRestarts ?? 5;
    const willRestart = restart && lead.restartTimes.length < maxRestarts;
    for (const slot of group) {
      const { rank } = slot.info;
      this.log.error({ rank, pid: proc.pid, code, signal, willRestart, ...(lead.tail.length ? { lastLog: lead.tail.at(-1) } : {}) }, 'server exited unexpectedly');
      this.emit('exit', { rank, pid: proc.pid ?? 0, code, signal, willRestart });
    }
    if (!willRestart) {
      for (const slot of group) slot.info.status = 'down';
      if (restart) {
        for (const slot of group) {
          this.log.error({ rank: slot.info.rank, restarts: lead.restartTimes.length, windowMs }, 'server crashes too often: giving up on it');
          this.emit('giveUp', { rank: slot.info.rank, restarts: slot.info.restarts });
        }
      }
      if (this.slots.every((s) => s.info.status === 'down')) this.emit('allDown');
      return;
    }
    for (const slot of group) slot.info.status = 'restarting';
    const delay = Math.min(10_000, (this.opts.restartDelayMs ?? 500) * 2 ** lead.restartTimes.length);
    lead.restartTimes.push(now);
    lead.restartTimer = setTimeout(() => {
      lead.restartTimer = null;
      if (this.phase !== 'running' && this.phase !== 'starting') return;
      for (const slot of group) slot.info.restarts++;
      // Same ports as before, so clients can reconnect; OS-picked ones if that failed.
      const ports = group.map((slot) => {
        const fixed = this.fixedPort(slot.info.rank);
        return slot.restartFailed && fixed === 0 ? 0 : slot.info.port || fixed;
      });
      this.spawnServer(group, ports, { first: false }).catch((err: Error) => {
        // The failed attempt's exit went through onExit, which schedules the next one.
        this.log.warn({ rank: lead.info.rank, err: err.message }, 'restart failed');
      });
    }, delay);
  }

  /** Rewrites the discovery file from the known addresses (atomic: temp file + rename). */
  private async rewriteDiscovery(): Promise<void> {
    const lines = this.slots.map((s) => `${s.info.host},${s.info.port}`);
    const tmp = `${this.discoveryConfig}.tmp-${process.pid}`;
    await writeFile(tmp, `${this.numServers}\n${lines.join('\n')}\n`);
    await rename(tmp, this.discoveryConfig);
    this.log.info({ discovery: this.discoveryConfig }, 'discovery file rewritten (a server moved to another port)');
  }

  private tailHint(slot: Slot): string {
    const last = slot.tail.slice(-5);
    return last.length ? `; last log lines:\n${last.join('\n')}` : '';
  }
}

/** The host a client should dial: the machine's name when bound to every interface. */
function advertisedHost(bound: string): string {
  return bound === '0.0.0.0' || bound === '::' ? hostname() : bound;
}
