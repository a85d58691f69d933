/**
 * Command-line security and limit options shared by commands that run servers
 * (`dfaiss server`, launchers) or connect to them. The secret itself is never a flag value:
 * `ps` shows every process's arguments to every user. It comes from --secret-file or from
 * the DFAISS_SECRET environment variable (readable only by the same user and root).
 */
import { InvalidArgumentError, type Command } from 'commander';
import type { Logger } from 'pino';
import { DfaissError, ValidationError } from '../errors.js';
import { readSecretFile, secretBytes } from '../protocol/auth.js';
import { TlsTransport, readPem, type TlsClientOptions } from '../protocol/tls.js';
import type { ServerSecurityOptions } from '../server/security-options.js';
import { intArg } from './args.js';

export const SECRET_ENV = 'DFAISS_SECRET';

export interface SecurityCliOptions {
  secretFile?: string;
  tlsKey?: string;
  tlsCert?: string;
  tlsCa?: string;
  maxFrameMb?: number;
  maxConnections?: number;
  frameTimeoutMs?: number;
}

/** Adds --secret-file, --tls-key, --tls-cert, --tls-ca, --max-frame-mb, --max-connections, --frame-timeout-ms. */
export function addServerSecurityOptions(cmd: Command): Command {
  return cmd
    .option('--secret-file <file>', `require clients to know the shared secret in this file (chmod 600; or set ${SECRET_ENV})`)
    .option('--tls-key <file>', 'serve TLS: PEM private key (with --tls-cert)')
    .option('--tls-cert <file>', 'serve TLS: PEM certificate chain; its subjectAltName must cover the host names clients use')
    .option('--tls-ca <file>', 'with TLS: require client certificates signed by this PEM CA')
    .option('--max-frame-mb <n>', 'largest request frame in MiB (bounds one batch)', mibArg('--max-frame-mb'), 256)
    .option('--max-connections <n>', 'connections served at once (0 = unlimited)', intArg('--max-connections', 0, 1_000_000), 1024)
    .option('--frame-timeout-ms <ms>', 'close a connection whose partly received frame gets no new bytes this long (0 = never)', intArg('--frame-timeout-ms', 0, 3_600_000), 30_000);
}

function mibArg(flag: string): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    // 4095 MiB: the frame length field is a u32.
    if (value.trim() === '' || !Number.isFinite(n) || n < 1 / 1024 || n > 4095) {
      throw new InvalidArgumentError(`${flag} expects a number of MiB from 0.001 to 4095, got "${value}"`);
    }
    return n;
  };
}

/**
 * The shared secret from --secret-file, else from DFAISS_SECRET, else undefined. Warns
 * through `warn` about a secret file other users can read.
 */
export function secretFromCli(secretFile: string | undefined, warn?: (message: string) => void): Buffer | undefined {
  if (secretFile !== undefined) return readSecretFile(secretFile, warn);
  const env = process.env[SECRET_ENV];
  if (env !== undefined && env !== '') return secretBytes(env, SECRET_ENV);
  return undefined;
}

/** IndexServer options for the parsed flags. */
export function serverSecurityFromCli(opts: SecurityCliOptions, logger?: Logger): ServerSecurityOptions {
  const out: ServerSecurityOptions = {};
  const secret = secretFromCli(opts.secretFile, (m) => logger?.warn(m));
  if (secret) out.auth = { secret };
  if (opts.tlsKey !== undefined || opts.tlsCert !== undefined || opts.tlsCa !== undefined) {
    if (opts.tlsKey === undefined || opts.tlsCert === undefined) {
      throw new ValidationError('--tls-key/--tls-cert', 'both, to serve TLS (--tls-ca is optional)', opts.tlsKey === undefined ? '--tls-cert only' : '--tls-key only');
    }
    // Read the files now (and check the key matches the certificate) so mistakes stop the command here.
    out.tls = {
      key: readPem(opts.tlsKey, '--tls-key'),
      cert: readPem(opts.tlsCert, '--tls-cert'),
      ...(opts.tlsCa !== undefined ? { ca: readPem(opts.tlsCa, '--tls-ca') } : {}),
    };
    new TlsTransport({ server: out.tls });
  }
  if (opts.maxFrameMb !== undefined) out.maxFrameBytes = Math.max(1024, Math.floor((opts.maxFrameMb * 1024 * 1024) / 8) * 8);
  if (opts.maxConnections !== undefined) out.maxConnections = opts.maxConnections;
  if (opts.frameTimeoutMs !== undefined) out.frameTimeoutMs = opts.frameTimeoutMs;
  return out;
}

/** serverSecurityFromCli, but a configuration mistake ends the command with its message (no stack trace). */
export function serverSecurityOrExit(cmd: Command, opts: SecurityCliOptions, logger?: Logger): ServerSecurityOptions {
  try {
    return serverSecurityFromCli(opts, logger);
  } catch (err) {
    if (!(err instanceof DfaissError)) throw err;
    // Not cmd.error(): the help text after a configuration mistake would bury the message.
    process.stderr.write(`dfaiss ${cmd.name()}: ${err.message}\n`);
    process.exit(2);
  }
}

/** Client-side options for commands that connect to servers (--secret-file / DFAISS_SECRET, --tls-ca). */
export function clientSecurityFromCli(opts: { secretFile?: string; tlsCa?: string; tlsServername?: string }): { secret?: Buffer; tls?: TlsClientOptions } {
  const out: { secret?: Buffer; tls?: TlsClientOptions } = {};
  const secret = secretFromCli(opts.secretFile);
  if (secret) out.secret = secret;
  if (opts.tlsCa !== undefined) out.tls = { ca: opts.tlsCa, ...(opts.tlsServername ? { servername: opts.tlsServername } : {}) };
  return out;
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
