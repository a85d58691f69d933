/**
 * Discovery file: first line the number of servers N, then one "host,port" line per server
 * (CRLF or LF). Servers append themselves as they come up, so the client re-reads the file
 * with exponential back-off (0.1 s, x1.5) until N servers are listed, like the original.
 */
import { readFile } from 'node:fs/promises';
import { TimeoutError, ValidationError } from '../errors.js';

export interface ServerAddress {
  host: string;
  port: number;
}

export interface DiscoveryOptions {
  /** Give up after this long. @default 7_200_000 (2 h, as the original) */
  timeoutMs?: number;
  /** First wait between reads. @default 100 */
  initialDelayMs?: number;
}

/** Parses a discovery file's text; returns the expected count and the servers listed so far. */
export function parseDiscovery(text: string, path = '<discovery>'): { expected: number; servers: ServerAddress[] } {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length === 0) return { expected: -1, servers: [] };
  const expected = Number(lines[0]);
  if (!Number.isSafeInteger(expected) || expected <= 0) {
    throw new ValidationError(`${path} line 1`, 'the number of servers (a positive integer)', lines[0]);
  }
  const servers = lines.slice(1).map((line, i) => {
    const m = /^(.+),(\d{1,5})$/.exec(line);
    const port = m ? Number(m[2]) : NaN;
    if (!m || port < 1 || port > 65535) throw new ValidationError(`${path} line ${i + 2}`, '"host,port"', line);
    return { host: m[1]!.trim(), port };
  });
  return { expected, servers };
}

/** Waits until the file lists as many servers as its first line says. */
export async function readDiscovery(path: string, opts: DiscoveryOptions = {}): Promise<ServerAddress[]> {
  const timeoutMs = opts.timeoutMs ?? 7_200_000;
  const start = Date.now();
  let delay = opts.initialDelayMs ?? 100;
  let last = { expected: -1, servers: [] as ServerAddress[] };
  for (;;) {
    try {
      last = parseDiscovery(await readFile(path, 'utf8'), path);
      if (last.expected > 0 && last.servers.length >= last.expected) return last.servers.slice(0, last.expected);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const waited = Date.now() - start;
    if (waited >= timeoutMs) {
      throw new TimeoutError(
        `${last.expected} != ${last.servers.length} in server list ${path}. Timed out after waiting ${(waited / 1000).toFixed(1)} seconds`,
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(delay, timeoutMs - waited)));
    delay *= 1.5;
  }
}
