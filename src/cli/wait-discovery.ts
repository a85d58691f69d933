/**
 * The CLI's wait for a discovery file: like the client's own (re-reads with back-off until
 * the file lists every server), but it says what it is waiting for every few seconds, on
 * stderr, and gives up with a sentence that names the file, what it holds and the flag
 * that sets the deadline. Kept here, in the CLI layer: the library's wait stays quiet.
 */
import { readFile } from 'node:fs/promises';
import { parseDiscovery, type ServerAddress } from '../discovery/discovery-file.js';
import { TimeoutError } from '../errors.js';

export interface WaitDiscoveryOptions {
  /** Command name for the messages, e.g. 'load'. */
  command: string;
  timeoutMs: number;
  /** Flag that sets timeoutMs, named when giving up. */
  timeoutFlag: string;
  /** Seconds between "still waiting" lines. @default 3 */
  reportEverySec?: number;
  /** Where the lines go. @default stderr */
  write?: (line: string) => void;
}

type Seen = { kind: 'missing' } | { kind: 'empty' } | { kind: 'partial'; expected: number; listed: number };

function describe(path: string, seen: Seen): string {
  if (seen.kind === 'missing') return `${path} does not exist yet`;
  if (seen.kind === 'empty') return `${path} is empty (no server count line yet)`;
  return `${path} lists ${seen.listed} of ${seen.expected} servers`;
}

/** Resolves once `path` lists every server; the servers as listed. */
export async function waitForDiscovery(path: string, opts: WaitDiscoveryOptions): Promise<ServerAddress[]> {
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const every = (opts.reportEverySec ?? 3) * 1000;
  const start = Date.now();
  const deadline = start + opts.timeoutMs;
  let nextReport = start + every;
  let delay = 100;
  let seen: Seen = { kind: 'missing' };
  for (;;) {
    let text: string | null = null;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text === null) seen = { kind: 'missing' };
    else {
      const { expected, servers } = parseDiscovery(text, path); // a malformed file fails at once, naming its line
      if (expected > 0 && servers.length >= expected) return servers.slice(0, expected);
      seen = expected < 0 ? { kind: 'empty' } : { kind: 'partial', expected, listed: servers.length };
    }
    const now = Date.now();
    if (now >= deadline) {
      throw new TimeoutError(
        `gave up waiting for the discovery file after ${Math.round(opts.timeoutMs / 1000)} s: ${describe(path, seen)}. ` +
          `Start the servers ('dfaiss launch local --discovery-config ${path} ...'), check the path, or wait longer with ${opts.timeoutFlag}`,
      );
    }
    if (now >= nextReport) {
      write(`dfaiss ${opts.command}: waiting for the servers: ${describe(path, seen)} (${Math.round((now - start) / 1000)} s of ${Math.round(opts.timeoutMs / 1000)} s, ${opts.timeoutFlag})`);
      nextReport = now + every;
    }
    await new Promise((r) => setTimeout(r, Math.max(1, Math.min(delay, deadline - now, nextReport - now))));
    delay = Math.min(delay * 1.5, 1000);
  }
}
