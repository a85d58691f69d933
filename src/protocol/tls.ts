/**
 * TLS transport over node:tls. Same frames as TCP (SocketConnection works on any stream
 * socket); only connection set-up differs. Server: certificate + key, and optionally a CA
 * whose client certificates it requires. Client: the CA that signed the server's
 * certificate (default: the system's roots), the name to check it against, optionally a
 * client certificate.
 *
 * Certificate problems are AuthError (retrying will not help); network problems stay
 * ConnectionError.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { AuthError, ConnectionError, DfaissError, ValidationError } from '../errors.js';
import { DEFAULT_MAX_FRAME_BYTES } from './frame.js';
import { acceptConnection, awaitConnected, checkMaxFrameBytes, configureSocket, formatHostPort, listenOn, type TcpTransportOptions } from './tcp.js';
import type { ConnectOptions, Connection, ListenOptions, Listener, Transport } from './transport.js';

/** A PEM file path, PEM text (starting with "-----BEGIN"), or PEM bytes. */
export type PemSource = string | Uint8Array;

export interface TlsServerOptions {
  /** The server's private key (PEM). */
  key: PemSource;
  /** The server's certificate chain (PEM). Its subjectAltName must cover the names clients connect to. */
  cert: PemSource;
  /** When given, clients must present a certificate signed by this CA (mutual TLS). */
  ca?: PemSource;
}

export interface TlsClientOptions {
  /** CA certificate(s) that signed the server's certificate (PEM). Default: the system's trusted roots. */
  ca?: PemSource;
  /** Name to verify the server's certificate against (and send as SNI). Default: the host connected to. */
  servername?: string;
  /** Client certificate, for servers started with a CA (mutual TLS). */
  cert?: PemSource;
  /** Private key of the client certificate. */
  key?: PemSource;
}

export interface TlsTransportOptions extends TcpTransportOptions {
  /** Needed to listen. */
  server?: TlsServerOptions;
  /** Used to connect. */
  client?: TlsClientOptions;
  /** Server side: a TLS handshake that takes longer is dropped. Default 10 000 ms. */
  handshakeTimeoutMs?: number;
}

/** Reads a PEM source: a file path, or PEM given inline. */
export function readPem(source: PemSource, field: string): Buffer {
  if (source instanceof Uint8Array) return Buffer.from(source);
  if (typeof source !== 'string' || source === '') throw new ValidationError(field, 'a PEM file path or PEM text', source);
  if (source.trimStart().startsWith('-----BEGIN')) return Buffer.from(source, 'utf8');
  try {
    return readFileSync(source);
  } catch (err) {
    throw new ValidationError(field, `a readable PEM file (${(err as Error).message})`, source);
  }
}

const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REJECTED',
]);

/** OpenSSL's short reason ("wrong version number") instead of its multi-line message. */
function tlsReason(err: unknown): string {
  const e = err as (NodeJS.ErrnoException & { reason?: unknown }) | undefined;
  if (typeof e?.reason === 'string' && e.reason !== '') return e.reason;
  return (e?.message ?? String(err)).trim();
}

/**
 * Turns a client-side TLS failure into an error that says what to do. Returns undefined
 * for errors that are not about TLS.
 */
export function explainTlsError(err: unknown, remote: string): DfaissError | undefined {
  const e = err as NodeJS.ErrnoException | undefined;
  const code = e?.code ?? '';
  const msg = tlsReason(err);
  if (UNTRUSTED.has(code)) {
    return new AuthError(
      `TLS: server ${remote} presented a certificate this client does not trust (${msg}): pass the CA certificate that signed it as tls.ca (a PEM file)`,
      { cause: err },
    );
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    return new AuthError(`TLS: the certificate of server ${remote} is not valid now (${msg}): renew it`, { cause: err });
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new AuthError(
      `TLS: the certificate of server ${remote} does not name the host connected to (${msg}): connect with a name in its subjectAltName, or set tls.servername`,
      { cause: err },
    );
  }
  if (/certificate required|alert bad certificate|alert unknown ca|peer did not return a certificate/i.test(msg) || code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') {
    return new AuthError(
      `TLS: server ${remote} refused this client's certificate (${msg}): it requires a client certificate signed by its CA (pass tls.cert and tls.key)`,
      { cause: err },
    );
  }
  if (/wrong version number|packet length too long|unknown protocol|http request/i.test(msg)) {
    return new ConnectionError(`TLS handshake with ${remote} failed (${msg}): is the server running without TLS? Connect without tls options, or start it with --tls-cert/--tls-key`, {
      cause: err,
    });
  }
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS')) {
    return new ConnectionError(`TLS handshake with ${remote} failed: ${msg}`, { cause: err });
  }
  return undefined;
}

export class TlsTransport implements Transport {
  private readonly noDelay: boolean;
  private readonly keepAliveMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly serverContext: tls.TlsOptions | undefined;
  private readonly clientContext: tls.ConnectionOptions | undefined;
  private readonly servername: string | undefined;

  /** Reads every certificate and key now, so a bad path fails at construction. */
  constructor(opts: TlsTransportOptions) {
    this.noDelay = opts.noDelay ?? true;
    this.keepAliveMs = opts.keepAliveMs ?? 15_000;
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
    if (opts.server) {
      const s = opts.server;
      if (s.key === undefined || s.cert === undefined) throw new ValidationError('tls', 'both key and cert (PEM files) to serve TLS', 'missing key or cert');
      const ca = s.ca === undefined ? undefined : readPem(s.ca, 'tls.ca');
      this.serverContext = {
        key: readPem(s.key, 'tls.key'),
        cert: readPem(s.cert, 'tls.cert'),
        ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}),
        minVersion: 'TLSv1.2',
      };
      try {
        tls.createSecureContext(this.serverContext); // key/cert mismatch, bad PEM: fail now
      } catch (err) {
        throw new ValidationError('tls', `a matching PEM key and certificate (${(err as Error).message})`, 'the given files');
      }
    }
    if (opts.client) {
      const c = opts.client;
      if ((c.cert === undefined) !== (c.key === undefined)) {
        throw new ValidationError('tls', 'both cert and key for a client certificate, or neither', c.cert === undefined ? 'key only' : 'cert only');
      }
      this.servername = c.servername;
      this.clientContext = {
        ...(c.ca !== undefined ? { ca: readPem(c.ca, 'tls.ca') } : {}),
        ...(c.cert !== undefined ? { cert: readPem(c.cert, 'tls.cert'), key: readPem(c.key as PemSource, 'tls.key') } : {}),
        minVersion: 'TLSv1.2',
        rejectUnauthorized: true,
      };
      try {
        tls.createSecureContext(this.clientContext);
      } catch (err) {
        throw new ValidationError('tls', `valid PEM certificates and keys (${(err as Error).message})`, 'the given files');
      }
    }
  }

  connect(host: string, port: number, opts: ConnectOptions = {}): Promise<Connection> {
    const remote = formatHostPort(host, port);
    const context = this.clientContext ?? { minVersion: 'TLSv1.2' as const, rejectUnauthorized: true };
    const servername = this.servername ?? (net.isIP(host) ? undefined : host);
    const socket = tls.connect({ ...context, host, port, ...(servername ? { servername } : {}) });
    // Under TLS 1.3 a server that rejects the client certificate does so after the client's
    // handshake is done, and Node's server just closes: the client sees a silent end.
    const quietEnd = this.clientContext?.cert
      ? () =>
          new AuthError(
            `TLS: server ${remote} closed the connection right after the handshake without a word: it most likely refused this client's certificate ` +
              "(mutual TLS: tls.cert must be signed by the CA the server was started with, --tls-ca; the server's log names the reason)",
          )
      : undefined;
    return awaitConnected(socket, 'secureConnect', remote, opts, (s) => this.configure(s), (err) => explainTlsError(err, remote), quietEnd);
  }

  listen(host: string, port: number, onConnection: (conn: Connection) => void, opts: ListenOptions = {}): Promise<Listener> {
    checkMaxFrameBytes(opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    const context = this.serverContext;
    if (!context) {
      return Promise.reject(new ValidationError('tls', 'server options {key, cert} to listen with TLS', 'client options only'));
    }
    return listenOn(host, port, opts, () => {
      const server = tls.createServer({ ...context, handshakeTimeout: this.handshakeTimeoutMs }, (socket) => {
        this.configure(socket);
        acceptConnection(socket, opts, onConnection);
      });
      server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
        const remote = socket.remoteAddress ? formatHostPort(socket.remoteAddress, socket.remotePort) : 'a client';
        const reason = tlsReason(err);
        let hint = '';
        if (/certificate/i.test(reason)) hint = ': clients need a certificate signed by the CA given as tls.ca / --tls-ca';
        else if (/wrong version number|http request|unknown protocol|packet length/i.test(reason)) hint = ': the client does not speak TLS (it must connect with tls options)';
        else if (/hang up|ECONNRESET/i.test(reason) || err.code === 'ECONNRESET') hint = ' (the client gave up: it may not trust this server certificate)';
        const Cls = /certificate/i.test(reason) ? AuthError : ConnectionError;
        opts.onError?.(new Cls(`TLS handshake with ${remote} failed: ${reason}${hint}`, { cause: err }), { remote });
      });
      return server;
    });
  }

  private configure(socket: tls.TLSSocket): void {
    configureSocket(socket, this.noDelay, this.keepAliveMs);
  }
}
