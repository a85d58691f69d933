/** Security options of IndexClient (see docs/security.md), turned into RpcClient options. */
import { TlsTransport, readSecretFile, type RpcClientOptions, type Secret, type TlsClientOptions } from '../protocol/index.js';

export interface ClientSecurityOptions {
  /**
   * Connect with TLS. `ca`: PEM file of the CA that signed the servers' certificates
   * (default: system roots); `servername`: name to check certificates against; `cert`/`key`:
   * a client certificate for servers started with --tls-ca.
   */
  tls?: TlsClientOptions;
  /** Shared secret of servers started with --secret-file (at least 16 bytes). The servers must then prove they know it too. */
  secret?: Secret;
  /** Read the shared secret from this file instead (trailing newline ignored). */
  secretFile?: string;
}

/** The RpcClient options for these settings; certificate and secret files are read once, here. */
export function rpcClientSecurityOptions(opts: ClientSecurityOptions): Pick<RpcClientOptions, 'transport' | 'secret'> {
  const out: Pick<RpcClientOptions, 'transport' | 'secret'> = {};
  if (opts.tls !== undefined) out.transport = new TlsTransport({ client: opts.tls });
  if (opts.secret !== undefined) out.secret = opts.secret;
  else if (opts.secretFile !== undefined) out.secret = readSecretFile(opts.secretFile);
  return out;
}
