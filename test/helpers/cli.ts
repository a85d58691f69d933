/** Runs the built `dfaiss` CLI as a child process (async: the test's own event loop keeps running). */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { CLI } from './cluster.js';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export const CHILD_ENV = { ...process.env, OMP_WAIT_POLICY: 'PASSIVE', DFAISS_LOG_LEVEL: process.env.DFAISS_LOG_LEVEL ?? 'warn' };

export function runCli(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? CHILD_ENV });
  return collect(proc, opts.timeoutMs ?? 60_000, args);
}

/** Waits for a child to exit (SIGKILL after timeoutMs) and returns its output. */
export function collect(proc: ChildProcess, timeoutMs: number, what: unknown = ''): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`dfaiss ${JSON.stringify(what)} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface EventLog {
  /** Every JSON line with an `event` field seen so far on stdout. */
  readonly events: Array<Record<string, unknown> & { event: string }>;
  /** The first event (already seen or still to come) matching name and predicate; bounded by timeoutMs. */
  wait<T = Record<string, unknown>>(event: string, where?: (e: T & { event: string }) => boolean, timeoutMs?: number): Promise<T & { event: string }>;
}

/** Records the JSON event lines a child prints on stdout (no event can be missed by waiting late). */
export function eventLog(proc: ChildProcess): EventLog {
  const events: Array<Record<string, unknown> & { event: string }> = [];
  const waiters = new Set<() => void>();
  let exited = false;
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    try {
      const ev = JSON.parse(line) as { event?: unknown };
      if (typeof ev.event === 'string') events.push(ev as Record<string, unknown> & { event: string });
    } catch {
      return;
    }
    for (const w of waiters) w();
  });
  proc.once('exit', () => {
    exited = true;
    for (const w of waiters) w();
  });
  return {
    events,
    wait<T>(event: string, where: (e: T & { event: string }) => boolean = () => true, timeoutMs = 30_000) {
      return new Promise<T & { event: string }>((resolve, reject) => {
        const check = (): void => {
          const hit = events.find((e) => e.event === event && where(e as unknown as T & { event: string }));
          if (hit) finish(() => resolve(hit as unknown as T & { event: string }));
          else if (exited) finish(() => reject(new Error(`process exited (code ${proc.exitCode}) before '${event}'`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`no '${event}' event within ${timeoutMs} ms; saw ${JSON.stringify(events)}`))), timeoutMs);
        const finish = (f: () => void): void => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
  };
}

/** Is the process running (zombies count as gone: a container's PID 1 may not reap them)? */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Polls until none of the pids is alive; false after timeoutMs. */
export async function waitGone(pids: number[], timeoutMs = 15_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (pids.some(alive)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

// ---- vector files the tests write ----

/** float32 -> IEEE half bits (round to nearest even; fine for the normal-range values tests use). */
export function toHalf(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (exp <= 0) return sign; // tiny: flush to zero
  if (exp >= 31) return sign | 0x7c00;
  let h = sign | (exp << 10) | (mant >>> 13);
  mant &= 0x1fff;
  if (mant > 0x1000 || (mant === 0x1000 && (h & 1))) h++;
  return h;
}

export function writeFvecs(path: string, data: Float32Array, dim: number): void {
  const n = data.length / dim;
  const buf = Buffer.alloc(n * (4 + 4 * dim));
  for (let i = 0; i < n; i++) {
    const off = i * (4 + 4 * dim);
    buf.writeInt32LE(dim, off);
    for (let j = 0; j < dim; j++) buf.writeFloatLE(data[i * dim + j]!, off + 4 + 4 * j);
  }
  writeFileSync(path, buf);
}

export function writeNpy(path: string, data: Float32Array | Uint16Array, dim: number): void {
  const descr = data instanceof Uint16Array ? '<f2' : '<f4';
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${data.length / dim}, ${dim}), }`;
  // magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64, as numpy writes it
  const pad = 64 - ((10 + header.length + 1) % 64);
  header = `${header}${' '.repeat(pad % 64)}\n`;
  const head = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(head);
  head.writeUInt16LE(header.length, 8);
  writeFileSync(path, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

export function writeRaw(path: string, data: Float32Array | Uint16Array): void {
  writeFileSync(path, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
}
