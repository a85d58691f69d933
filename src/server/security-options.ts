/**
 * Security and resource-limit options of IndexServer (see docs/security.md), passed
 * through to the RPC layer.
 */
import type { RpcServerOptions, Secret, TlsServerOptions } from '../protocol/index.js';

export interface ServerSecurityOptions {
  /** Serve TLS: PEM file paths (or PEM text) of the key and certificate; with `ca`, clients must present a certificate it signed. */
  tls?: TlsServerOptions;
  /** Require clients to prove they know this shared secret (HMAC challenge-response; at least 16 bytes). */
  auth?: { secret: Secret };
  /** Largest request frame accepted, in bytes (bounds one batch). @default 268_435_456 (256 MiB) */
  maxFrameBytes?: number;
  /** Connections served at once; more are refused with a goodbye. 0 = unlimited. @default 1024 */
  maxConnections?: number;
  /** Requests running at once per connection; at the limit the server stops reading it. @default 32 */
  maxInFlight?: number;
  /** A connection must finish hello (and auth) within this time, TLS handshake included. @default 10_000 */
  helloTimeoutMs?: number;
  /** A connection whose partly received frame makes no progress this long is closed (idle ones stay). 0 = never. @default 30_000 */
  frameTimeoutMs?: number;
}

/** The options that are set, as RpcServer options. */
export function rpcSecurityOptions(opts: ServerSecurityOptions): Partial<RpcServerOptions> {
  const out: Partial<RpcServerOptions> = {};
  if (opts.tls !== undefined) out.tls = opts.tls;
  if (opts.auth !== undefined) out.auth = opts.auth;
  if (opts.maxFrameBytes !== undefined) out.maxFrameBytes = opts.maxFrameBytes;
  if (opts.maxConnections !== undefined) out.maxConnections = opts.maxConnections;
  if (opts.maxInFlight !== undefined) out.maxInFlight = opts.maxInFlight;
  if (opts.helloTimeoutMs !== undefined) out.helloTimeoutMs = opts.helloTimeoutMs;
  if (opts.frameTimeoutMs !== undefined) out.frameTimeoutMs = opts.frameTimeoutMs;
  return out;
}
