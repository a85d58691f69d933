/**
 * `dfaiss server` announces itself with one JSON line on stdout,
 * {"event":"listening","port":...}. This waits for that line from a spawned server.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface WaitListeningOptions {
  /** Names the server in errors, e.g. "server 3". @default 'server' */
  label?: string;
  /** @default 20_000 */
  timeoutMs?: number;
  /** Appended to errors (e.g. the server's stderr so far). */
  detail?: () => string;
}

/** Resolves with the bound port; rejects when the process exits first or the time runs out. */
export async function waitForListening(proc: ChildProcess, opts: WaitListeningOptions = {}): Promise<number> {
  return (await waitForListeningEvent(proc, opts)).port;
}

/** The whole listening event: the RPC port, and the metrics port when the server serves one. */
export async function waitForListeningEvent(proc: ChildProcess, opts: WaitListeningOptions = {}): Promise<{ port: number; metricsPort?: number }> {
  return (await waitForListeningEvents(proc, 1, opts))[0]!;
}

export interface ListeningEvent {
  /** The rank that listens (`dfaiss server --ranks-per-process` announces each of its ranks). */
  rank?: number;
  port: number;
  metricsPort?: number;
}

/** The first `count` listening events of a process (one per rank it serves). */
export function waitForListeningEvents(proc: ChildProcess, count: number, opts: WaitListeningOptions = {}): Promise<ListeningEvent[]> {
  const label = opts.label ?? 'server';
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const detail = (): string => (opts.detail ? `: ${opts.detail()}` : '');
  const events: ListeningEvent[] = [];
  return new Promise<ListeningEvent[]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} did not start within ${timeoutMs / 1000} s${detail()}`)), timeoutMs);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited with code ${code} before listening${detail()}`));
    });
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      try {
        const ev = JSON.parse(line) as { event?: string; rank?: number; port?: number; metricsPort?: number };
        if (ev.event === 'listening' && typeof ev.port === 'number' && events.length < count) {
          events.push({ ...(typeof ev.rank === 'number' ? { rank: ev.rank } : {}), port: ev.port, ...(typeof ev.metricsPort === 'number' ? { metricsPort: ev.metricsPort } : {}) });
          if (events.length === count) {
            clearTimeout(timer);
            resolve(events);
          }
        }
      } catch {
        /* a line that is not ours */
      }
    });
  });
}
