/**
 * RPC server: accepts connections and serves each as a Session (session.ts: handshake, then
 * requests dispatched through the method table, rpc-methods.ts). Limits that protect the
 * process live here: connections served at once, frame sizes, requests per connection.
 */
import { ConnectionError } from '../errors.js';
import { secretBytes, type Secret } from './auth.js';
import { DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION } from './frame.js';
import type { ServerInfo } from './hello.js';
import type { PoolOptions } from './pool.js';
import { methodMap, type MethodSpec, type MethodTable } from './rpc-methods.js';
import { Session } from './session.js';
import { TcpTransport, checkMaxFrameBytes } from './tcp.js';
import { TlsTransport, type TlsServerOptions } from './tls.js';
import type { Connection, Listener, Transport } from './transport.js';

export { defineMethod, type AttachmentRule, type CallContext, type HandlerReply, type MethodSpec, type MethodTable } from './rpc-methods.js';

/** Frames before the handshake completes are tiny; a stranger must not make us allocate 256 MiB. */
const PRE_HELLO_MAX_FRAME_BYTES = 64 * 1024;
/** Default for RpcServerOptions.maxConnections. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Sockets beyond maxConnections + this are dropped by the transport without a word (e.g. a
 * flood of unfinished TLS handshakes); up to there, extra connections get a goodbye saying why.
 */
const HARD_CONNECTION_HEADROOM = 64;

export interface RpcServerOptions {
  methods: MethodTable;
  /** Reported in hello. Default 0. */
  rank?: number;
  /** Reported in hello, e.g. ['gpu', 'fp16']. */
  capabilities?: readonly string[];
  /** Reported in hello: the FAISS build serving the requests. */
  faiss?: ServerInfo['faiss'];
  /** Custom transport. Default: TLS when `tls` is given, else plain TCP. */
  transport?: Transport;
  /** Serve TLS with these certificate files (ignored when `transport` is given). */
  tls?: TlsServerOptions;
  /**
   * Require every client to prove it knows this shared secret (HMAC challenge-response in
   * the handshake; the secret itself never crosses the wire). At least 16 bytes.
   */
  auth?: { secret: Secret };
  /** Largest request frame accepted after the handshake. Default 256 MiB. */
  maxFrameBytes?: number;
  /** Concurrent requests per connection before it stops reading. Default 32. */
  maxInFlight?: number;
  /** A connection that has not completed hello (and auth) within this time is closed. Also the TLS handshake deadline. Default 10 000 ms. */
  helloTimeoutMs?: number;
  /**
   * A connection whose partly received frame gets no new bytes for this long is closed: a
   * peer that stalls mid-frame must not hold the connection and its buffer forever.
   * Connections idle between frames stay open (clients pool them). 0 = never. Default 30 000 ms.
   */
  frameTimeoutMs?: number;
  /** Connections served at once; further ones are closed with a goodbye saying why. 0 = unlimited. Default 1024. */
  maxConnections?: number;
  /** Receive-buffer pool per connection. */
  pool?: PoolOptions;
  /**
   * Problems worth logging: protocol violations by clients (ProtocolError), broken
   * connections (ConnectionError), handler bugs (non-DfaissError throws). Never throws back.
   */
  onError?: (err: Error, info: { remote: string; method?: string }) => void;
  /**
   * Told of every answered request of the method table (metrics): seconds from the request
   * being dispatched to its reply being written, and whether the reply was ok. Runs on the
   * hot path: keep it to a counter and a histogram observe. Never throws back.
   */
  onCall?: (method: string, seconds: number, ok: boolean) => void;
  /** Override for tests only. */
  protocolVersion?: number;
}

export class RpcServer {
  readonly rank: number;
  private readonly methods: ReadonlyMap<string, MethodSpec<unknown, unknown>>;
  private readonly capabilities: string[];
  private readonly transport: Transport;
  readonly maxFrameBytes: number;
  readonly maxInFlight: number;
  readonly helloTimeoutMs: number;
  readonly frameTimeoutMs: number;
  readonly maxConnections: number;
  readonly version: number;
  /** The shared secret's bytes when clients must authenticate. */
  readonly secret: Buffer | undefined;
  private readonly opts: RpcServerOptions;
  private listener: Listener | undefined;
  private readonly sessions = new Set<Session>();
  private closing: Promise<void> | undefined;

  constructor(opts: RpcServerOptions) {
    this.opts = opts;
    this.rank = opts.rank ?? 0;
    this.capabilities = [...(opts.capabilities ?? [])];
    this.maxFrameBytes = checkMaxFrameBytes(opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 32);
    this.helloTimeoutMs = opts.helloTimeoutMs ?? 10_000;
    this.frameTimeoutMs = opts.frameTimeoutMs ?? 30_000;
    if (!Number.isSafeInteger(this.frameTimeoutMs) || this.frameTimeoutMs < 0) {
      throw new RangeError(`frameTimeoutMs must be a non-negative integer (0 = never), got ${this.frameTimeoutMs}`);
    }
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!Number.isSafeInteger(this.maxConnections) || this.maxConnections < 0) {
      throw new RangeError(`maxConnections must be a non-negative integer (0 = unlimited), got ${this.maxConnections}`);
    }
    this.secret = opts.auth ? secretBytes(opts.auth.secret, 'auth.secret') : undefined;
    this.transport =
      opts.transport ?? (opts.tls ? new TlsTransport({ server: opts.tls, handshakeTimeoutMs: this.helloTimeoutMs }) : new TcpTransport());
    this.version = opts.protocolVersion ?? PROTOCOL_VERSION;
    this.methods = methodMap(opts.methods);
  }

  /** Starts listening; port 0 picks a free port. Resolves with the bound address. */
  async listen(host = '127.0.0.1', port = 0): Promise<{ host: string; port: number }> {
    if (this.listener) throw new Error('RpcServer.listen() was already called');
    this.listener = await this.transport.listen(host, port, (conn) => this.accept(conn), {
      maxFrameBytes: PRE_HELLO_MAX_FRAME_BYTES,
      pool: this.opts.pool,
      frameTimeoutMs: this.frameTimeoutMs,
      maxConnections: this.maxConnections > 0 ? this.maxConnections + HARD_CONNECTION_HEADROOM : 0,
      onError: (err, info) => this.report(err, info),
    });
    return { host: this.listener.host, port: this.listener.port };
  }

  get port(): number | undefined {
    return this.listener?.port;
  }

  get connectionCount(): number {
    return this.sessions.size;
  }

  get methodNames(): string[] {
    return [...this.methods.keys()];
  }

  /**
   * Stops accepting and closes every connection; clients get a ConnectionError "shutting
   * down" for their pending calls. With graceMs > 0, requests already running get that long
   * to finish and reply first (no new ones are read meanwhile).
   */
  close(opts: { graceMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      const listenerClosed = this.listener?.close();
      const reason = new ConnectionError(`server rank ${this.rank} is shutting down`);
      await Promise.all([...this.sessions].map((s) => s.shutdown(reason, opts.graceMs ?? 0)));
      await listenerClosed;
    })();
    return this.closing;
  }

  /** Used by sessions. */
  method(name: string): MethodSpec<unknown, unknown> | undefined {
    return this.methods.get(name);
  }

  helloInfo(): ServerInfo {
    return {
      version: this.version,
      rank: this.rank,
      capabilities: this.capabilities,
      maxFrameBytes: this.maxFrameBytes,
      ...(this.opts.faiss ? { faiss: this.opts.faiss } : {}),
    };
  }

  /** True when clients must authenticate with the shared secret. */
  get requiresAuth(): boolean {
    return this.secret !== undefined;
  }

  /** Used by sessions: passes one answered request to onCall. */
  observe(method: string, seconds: number, ok: boolean): void {
    const onCall = this.opts.onCall;
    if (onCall === undefined) return;
    try {
      onCall(method, seconds, ok);
    } catch {
      // a metrics bug must not take the server down
    }
  }

  report(err: Error, info: { remote: string; method?: string }): void {
    try {
      this.opts.onError?.(err, info);
    } catch {
      // a logging bug must not take the server down
    }
  }

  private accept(conn: Connection): void {
    if (this.closing) {
      conn.close(new ConnectionError(`server rank ${this.rank} is shutting down`));
      return;
    }
    if (this.maxConnections > 0 && this.sessions.size >= this.maxConnections) {
      const err = new ConnectionError(
        `server rank ${this.rank} already serves ${this.sessions.size} connections, its limit (maxConnections / --max-connections): close idle clients or raise the limit`,
      );
      this.report(err, { remote: conn.remote });
      conn.close(err);
      return;
    }
    const session = new Session(this, conn);
    this.sessions.add(session);
    session.closed.then(() => this.sessions.delete(session));
  }
}
