/** Helpers shared by the client-side commands (load, status, search, save, drop). */
import { InvalidArgumentError, type Command } from 'commander';
import type { IndexClientOptions } from '../client/api.js';
import { checkIndexId } from '../server/paths.js';
import { SECRET_ENV, clientSecurityFromCli } from './security.js';

export interface ClientSecurityCliOptions {
  secretFile?: string;
  tlsCa?: string;
  tlsServername?: string;
}

/** --secret-file, --tls-ca, --tls-servername for commands that connect to servers. */
export function addClientSecurityOptions(cmd: Command): Command {
  return cmd
    .option('--secret-file <file>', `shared secret of servers started with --secret-file (or set ${SECRET_ENV})`)
    .option('--tls-ca <file>', 'connect with TLS, trusting servers whose certificates this PEM CA signed')
    .option('--tls-servername <name>', "name to check the servers' TLS certificates against");
}

/** IndexClient options for the parsed security flags. */
export function clientSecurity(o: ClientSecurityCliOptions): Pick<IndexClientOptions, 'secret' | 'tls'> {
  return clientSecurityFromCli(o);
}

/** Seconds (may be fractional) as milliseconds, for --*-timeout style flags. */
export function secondsArg(flag: string, min = 0): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${flag} expects a number of seconds >= ${min}, got "${value}"`);
    return n;
  };
}

/** Index ids as the server accepts them, checked early so the error names the flag. */
export function indexIdArg(value: string): string {
  try {
    return checkIndexId(value, '--index-id');
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/**
 * Runs a command body: a failure prints `dfaiss <name>: <message>` (no stack trace; set
 * DFAISS_DEBUG=1 for one) and exits with code 1.
 */
export function run<A extends unknown[]>(name: string, body: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await body(...args);
    } catch (err) {
      const e = err as Error;
      process.stderr.write(`dfaiss ${name}: ${process.env.DFAISS_DEBUG ? (e.stack ?? e.message) : e.message}\n`);
      process.exitCode = 1;
    }
  };
}

/** Fixed-width text table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [fmt(header), fmt(widths.map((w) => '-'.repeat(w))), ...rows.map(fmt)].join('\n');
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
