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
  /**
   * Gets a line saying what is missing every `logIntervalMs` while waiting (the file is
   * missing, empty, or lists fewer servers than its count). @default a line on stderr
   */
  log?: (message: string) => void;
  /** @default 5000 */
  logIntervalMs?: number;
}

/** The default `log`: one stderr line, so a client stuck waiting says why. */
export function stderrLog(message: string): void {
  process.stderr.write(`dfaiss: ${message}\n`);
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

/**
 * Waits until the file lists as many servers as its first line says. More lines than the
 * count: the first N are used and a process warning (code DFAISS_DISCOVERY_EXTRA) names the
 * others, which are often stale entries of servers restarted by hand.
 */
export async function readDiscovery(path: string, opts: DiscoveryOptions = {}): Promise<ServerAddress[]> {
  const timeoutMs = opts.timeoutMs ?? 7_200_000;
  const log = opts.log ?? stderrLog;
  const logEvery = opts.logIntervalMs ?? 5000;
  const start = Date.now();
  let nextLog = start + logEvery;
  let delay = opts.initialDelayMs ?? 100;
  for (;;) {
    // What is wrong: `head` says it in a few words, `hint` what to do.
    let head: string;
    let hint: string;
    try {
      const found = parseDiscovery(await readFile(path, 'utf8'), path);
      if (found.expected > 0 && found.servers.length >= found.expected) {
        const used = found.servers.slice(0, found.expected);
        if (found.servers.length > found.expected) warnExtra(path, found.expected, used, found.servers.slice(found.expected));
        return used;
      }
      if (found.expected < 0) {
        head = `discovery file ${path} is empty`;
        hint = 'its first line must be the number of servers, then one "host,port" line per server';
      } else {
        // The original's words, which users grep for.
        head = `${found.expected} != ${found.servers.length} in server list ${path}`;
        hint =
          `it lists ${found.servers.length} of ${found.expected} servers` +
          (found.servers.length > 0 ? ` (${found.servers.map(fmt).join(', ')})` : '') +
          '; each server appends its line once it listens: check that the others started (their logs), or fix the count on line 1';
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      head = `discovery file ${path} does not exist`;
      hint = 'start the servers with --discovery-config pointing at it (the launchers do), or pass the path they write to';
    }
    const waited = Date.now() - start;
    if (waited >= timeoutMs) {
      throw new TimeoutError(`${head}. Timed out after waiting ${(waited / 1000).toFixed(1)} seconds: ${hint}`);
    }
    if (Date.now() >= nextLog) {
      log(`still waiting for servers (${Math.round(waited / 1000)} s of ${Math.round(timeoutMs / 1000)} s): ${head}: ${hint}`);
      nextLog = Date.now() + logEvery;
    }
    await new Promise((r) => setTimeout(r, Math.min(delay, timeoutMs - waited, Math.max(1, nextLog - Date.now()))));
    delay *= 1.5;
  }
}

function fmt(s: ServerAddress): string {
  return `${s.host},${s.port}`;
}

function warnExtra(path: string, count: number, used: ServerAddress[], extra: ServerAddress[]): void {
  process.emitWarning(
    `discovery file ${path} lists ${used.length + extra.length} servers but its first line says ${count}: ` +
      `using the first ${count} (${used.map(fmt).join(', ')}) and ignoring ${extra.map(fmt).join(', ')}; ` +
      'remove stale lines (a server restarted by hand appends a new one) or fix the count',
    { code: 'DFAISS_DISCOVERY_EXTRA', detail: JSON.stringify({ used, ignored: extra }) },
  );
}
