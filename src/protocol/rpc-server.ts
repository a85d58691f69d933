/**
 * RPC server: accepts connections, performs the hello exchange, and dispatches requests
 * through an explicit method table only (a Map built from the table: no prototype or
 * dynamic property lookup, so "constructor" or "__proto__" are just unknown methods).
 *
 * Per connection: requests run concurrently up to maxInFlight; at the limit the
 * connection stops reading, so a fast client is slowed down by TCP itself rather than
 * piling frames up in server memory. A request frame is released (its receive buffer
 * reused) only after its handler settled and the reply was written, because the reply may
 * reference the request's attachment views.
 */
import type { z } from 'zod';
import { AuthError, ConnectionError, DfaissError, ProtocolError, ValidationError } from '../errors.js';
import { AUTH_SCHEME, newNonce, proofsEqual, secretBytes, serverProof, clientProof, type Secret } from './auth.js';
import { isRequest, type Envelope, type ReplyEnvelope, type RequestEnvelope } from './codec.js';
import { errorFromWire, errorToWire } from './errors-wire.js';
import { DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, dtypeOf, encodeFrame, type Attachment, type Dtype, type EncodedFrame } from './frame.js';
import { AUTH_METHOD, HANDSHAKE_METHODS, HELLO_METHOD, authArgsSchema, helloArgsSchema, type ServerInfo } from './hello.js';
import type { PoolOptions } from './pool.js';
import { TcpTransport, checkMaxFrameBytes } from './tcp.js';
import { TlsTransport, type TlsServerOptions } from './tls.js';
import type { Connection, Listener, ReceivedFrame, Transport } from './transport.js';
import { parseWith } from './validate.js';

/** Frames before the handshake completes are tiny; a stranger must not make us allocate 256 MiB. */
const PRE_HELLO_MAX_FRAME_BYTES = 64 * 1024;
/** Default for RpcServerOptions.maxConnections. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Sockets beyond maxConnections + this are dropped by the transport without a word (e.g. a
 * flood of unfinished TLS handshakes); up to there, extra connections get a goodbye saying why.
 */
const HARD_CONNECTION_HEADROOM = 64;

export interface CallContext {
  readonly method: string;
  readonly requestId: number;
  /**
   * Zero-copy views into the request frame. They stay valid until the reply has been
   * written; after that the receive buffer is reused for later requests. To keep them
   * longer (e.g. vectors buffered for a background add), call retainAttachments().
   */
  readonly attachments: readonly Attachment[];
  /**
   * Takes ownership of the request's receive buffer: it will not be reused after the reply.
   * Call the returned function once the attachments are no longer used (calling it is
   * optional; without it the buffer is simply garbage collected, not recycled).
   */
  retainAttachments(): () => void;
  /** "host:port" of the client. */
  readonly remote: string;
  /** Aborted when the client's connection closes (the reply would go nowhere). */
  readonly signal: AbortSignal;
}

export interface HandlerReply<R = unknown> {
  result?: R;
  /**
   * Written without copying, after the handler returns: do not modify this memory
   * afterwards (allocate per reply rather than reusing a scratch buffer).
   */
  attachments?: readonly Attachment[];
}

/** Expected attachment dtypes in order; a trailing '?' marks an optional one (e.g. ['f32', 'i64?']). */
export type AttachmentRule = readonly (Dtype | `${Dtype}?`)[];

export interface MethodSpec<A = unknown, R = unknown> {
  /** Validates `args`; failures reach the client as ValidationError naming e.g. "args.k". Must be synchronous. */
  readonly schema: z.ZodType<A>;
  /** When given, attachments are checked against it before the handler runs. */
  readonly attachments?: AttachmentRule;
  readonly handler: (args: A, ctx: CallContext) => HandlerReply<R> | void | Promise<HandlerReply<R> | void>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type MethodTable = Readonly<Record<string, MethodSpec<any, any>>>;

/** Identity helper that infers the handler's args type from the schema. */
export function defineMethod<S extends z.ZodType, R = unknown>(spec: {
  schema: S;
  attachments?: AttachmentRule;
  handler: (args: z.output<S>, ctx: CallContext) => HandlerReply<R> | void | Promise<HandlerReply<R> | void>;
}): MethodSpec<z.output<S>, R> {
  return spec as MethodSpec<z.output<S>, R>;
}

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
    const methods = new Map<string, MethodSpec<unknown, unknown>>();
    for (const [name, spec] of Object.entries(opts.methods)) {
      if (HANDSHAKE_METHODS.includes(name)) throw new RangeError(`method name '${name}' is reserved for the handshake`);
      if (typeof spec?.handler !== 'function' || typeof spec.schema?.safeParse !== 'function') {
        throw new TypeError(`method '${name}' needs {schema: zod schema, handler: function}`);
      }
      methods.set(name, spec as MethodSpec<unknown, unknown>);
    }
    this.methods = methods;
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

class Session {
  /** Handshake progress: waiting for hello, waiting for auth (secret required), done. */
  private stage: 'hello' | 'auth' | 'ready' = 'hello';
  private clientNonce = '';
  private serverNonce = '';
  private inFlight = 0;
  private paused = false;
  private draining = false;
  private readonly ids = new Set<number>();
  private peerMaxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
  private readonly abort = new AbortController();
  private helloTimer: NodeJS.Timeout | undefined;
  private idle: (() => void) | undefined;
  private reported: Error | undefined;
  readonly closed: Promise<void>;

  constructor(
    private readonly server: RpcServer,
    private readonly conn: Connection,
  ) {
    this.closed = new Promise<void>((resolve) => {
      conn.onClose((reason) => {
        if (this.helloTimer) clearTimeout(this.helloTimer);
        this.abort.abort(reason ?? new ConnectionError(`connection to ${conn.remote} closed`));
        if (reason && reason !== this.reported) this.server.report(reason, { remote: conn.remote });
        resolve();
      });
    });
    this.helloTimer = setTimeout(() => {
      if (this.stage === 'auth') this.authError(`no auth within ${server.helloTimeoutMs} ms of connecting; closing the connection`);
      else this.protocolError(`no hello within ${server.helloTimeoutMs} ms of connecting; closing the idle connection`);
    }, server.helloTimeoutMs);
    this.helloTimer.unref();
    conn.onFrame((frame) => this.onFrame(frame));
  }

  async shutdown(reason: DfaissError, graceMs: number): Promise<void> {
    if (graceMs > 0 && this.inFlight > 0 && !this.conn.closed) {
      this.draining = true;
      this.conn.pause();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.conn.close(reason);
    await this.closed;
  }

  private onFrame(frame: ReceivedFrame): void {
    const env = frame.envelope;
    if (!isRequest(env)) {
      frame.release();
      if (env.id === 0 && !env.ok) {
        // The client says why it is leaving; report it and let the close follow.
        const err = errorFromWire(env.error);
        this.reported = err;
        this.server.report(err, { remote: this.conn.remote });
        return;
      }
      this.protocolError(`client sent a reply (id ${env.id}) but clients may only send requests`);
      return;
    }
    if (env.id === 0) {
      // Reserved for goodbye frames in every stage: a reply with id 0 would read as one.
      frame.release();
      this.protocolError(`request id 0 is reserved (for goodbye frames); '${env.method}' must use an id from 1`);
      return;
    }
    if (this.stage === 'hello') {
      if (env.method !== HELLO_METHOD) {
        frame.release();
        this.protocolError(`the first request must be '${HELLO_METHOD}', got '${env.method}'`);
        return;
      }
      this.hello(env, frame);
      return;
    }
    if (this.stage === 'auth') {
      frame.release();
      if (env.v !== this.server.version) {
        this.protocolError(`request uses protocol version ${env.v}, but this connection agreed on ${this.server.version}`);
        return;
      }
      if (env.method !== AUTH_METHOD) {
        this.authError(`client ${this.conn.remote} sent '${env.method}' before authenticating: this server requires a shared secret`);
        return;
      }
      this.authenticate(env);
      return;
    }
    if (env.v !== this.server.version) {
      frame.release();
      this.protocolError(`request uses protocol version ${env.v}, but this connection agreed on ${this.server.version}`);
      return;
    }
    if (this.ids.has(env.id)) {
      frame.release();
      this.protocolError(`request id ${env.id} is already in flight on this connection`);
      return;
    }
    const spec = HANDSHAKE_METHODS.includes(env.method) ? undefined : this.server.method(env.method);
    if (spec === undefined) {
      frame.release();
      const err =
        HANDSHAKE_METHODS.includes(env.method)
          ? new ProtocolError(`'${env.method}' was already exchanged on this connection`)
          : new ValidationError('method', `one of: ${this.server.methodNames.join(', ') || '(none)'}`, env.method);
      this.sendReply({ v: this.server.version, id: env.id, ok: false, error: errorToWire(err) }).catch(() => {});
      return;
    }
    this.ids.add(env.id);
    this.inFlight++;
    if (this.inFlight >= this.server.maxInFlight && !this.paused) {
      this.paused = true;
      this.conn.pause();
    }
    void this.run(env, spec, frame);
  }

  private async run(env: RequestEnvelope, spec: MethodSpec<unknown, unknown>, frame: ReceivedFrame): Promise<void> {
    const method = env.method;
    const t0 = performance.now();
    let reply: EncodedFrame;
    let retained = false;
    let ok = false;
    try {
      const args = parseWith(spec.schema, env.args, 'args');
      if (spec.attachments) checkAttachments(spec.attachments, frame.attachments);
      const ctx: CallContext = {
        method,
        requestId: env.id,
        attachments: frame.attachments,
        remote: this.conn.remote,
        signal: this.abort.signal,
        retainAttachments: () => {
          retained = true;
          return frame.release;
        },
      };
      const out = await spec.handler(args, ctx);
      reply = this.encodeOkReply({ v: this.server.version, id: env.id, ok: true, result: out?.result }, out?.attachments ?? [], method);
      ok = true;
    } catch (err) {
      reply = this.errorReply(env.id, err, method);
    }
    try {
      await this.conn.send(reply.parts);
    } catch {
      // The connection is gone; its close is reported once by the close handler.
    } finally {
      if (!retained) frame.release();
      this.server.observe(method, (performance.now() - t0) / 1000, ok);
      this.ids.delete(env.id);
      this.inFlight--;
      if (this.paused && this.inFlight < this.server.maxInFlight && !this.draining) {
        this.paused = false;
        this.conn.resume();
      }
      if (this.inFlight === 0) this.idle?.();
    }
  }

  /** Encodes an ok reply; throws (the caller answers with the error) when it cannot be sent as is. */
  private encodeOkReply(env: ReplyEnvelope, attachments: readonly Attachment[], method: string): EncodedFrame {
    const frame = encodeFrame(env, attachments);
    if (frame.byteLength > this.peerMaxFrameBytes) {
      throw new ProtocolError(
        `the reply to '${method}' is ${frame.byteLength} bytes, more than the client's limit of ${this.peerMaxFrameBytes} bytes (maxFrameBytes): request less data per call`,
      );
    }
    return frame;
  }

  private errorReply(id: number, err: unknown, method: string): EncodedFrame {
    if (!(err instanceof DfaissError)) {
      this.server.report(err instanceof Error ? err : new Error(String(err)), { remote: this.conn.remote, method });
    }
    return encodeFrame({ v: this.server.version, id, ok: false, error: errorToWire(err) });
  }

  private sendReply(env: Envelope, attachments: readonly Attachment[] = []): Promise<void> {
    return this.conn.send(encodeFrame(env, attachments).parts);
  }

  private hello(env: RequestEnvelope, frame: ReceivedFrame): void {
    frame.release();
    const version = this.server.version;
    let err: DfaissError | undefined;
    let args: z.infer<typeof helloArgsSchema> | undefined;
    try {
      args = parseWith(helloArgsSchema, env.args, 'args');
    } catch (e) {
      err = new ProtocolError(`bad hello from ${this.conn.remote}: ${(e as Error).message}`);
    }
    if (args && args.version !== version) {
      err = new ProtocolError(
        `client ${this.conn.remote} speaks protocol version ${args.version} but this server (rank ${this.server.rank}) speaks version ${version}: run the same dfaiss version on clients and servers`,
      );
    }
    if (!err && args && this.server.secret && args.nonce === undefined) {
      err = new AuthError(
        `server rank ${this.server.rank} requires a shared secret, and the client sent no credentials: pass { secret } (IndexClient / RpcClient option), or --secret-file / DFAISS_SECRET on the command line`,
      );
    }
    if (err || !args) {
      this.refuse(env.id, err ?? new ProtocolError('bad hello'), HELLO_METHOD);
      return;
    }
    if (args.maxFrameBytes !== undefined) this.peerMaxFrameBytes = args.maxFrameBytes;
    if (this.server.secret && args.nonce !== undefined) {
      // Challenge: the client must prove it knows the secret before anything else.
      this.stage = 'auth';
      this.clientNonce = args.nonce;
      this.serverNonce = newNonce();
      const result: ServerInfo = { ...this.server.helloInfo(), auth: { scheme: AUTH_SCHEME, nonce: this.serverNonce } };
      this.sendReply({ v: version, id: env.id, ok: true, result }).catch(() => {});
      return;
    }
    this.ready();
    this.sendReply({ v: version, id: env.id, ok: true, result: this.server.helloInfo() }).catch(() => {});
  }

  /** Second handshake step: checks the client's proof and answers with the server's. */
  private authenticate(env: RequestEnvelope): void {
    const secret = this.server.secret as Buffer;
    const version = this.server.version;
    const parsed = authArgsSchema.safeParse(env.args);
    const expected = clientProof(secret, this.serverNonce, this.clientNonce, version);
    if (!parsed.success || !proofsEqual(expected, parsed.data.proof)) {
      this.refuse(
        env.id,
        new AuthError(
          `authentication failed: the client's shared secret does not match the one of server rank ${this.server.rank}; give clients and servers the same secret (--secret-file / DFAISS_SECRET / { secret })`,
        ),
        AUTH_METHOD,
      );
      return;
    }
    this.ready();
    const result = { proof: serverProof(secret, this.clientNonce, this.serverNonce, version) };
    this.sendReply({ v: version, id: env.id, ok: true, result }).catch(() => {});
  }

  /** The handshake is complete: full-size frames from here on. */
  private ready(): void {
    this.stage = 'ready';
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.conn.setMaxFrameBytes(this.server.maxFrameBytes);
  }

  /** Answers a handshake request with an error, logs it, and closes the connection. */
  private refuse(id: number, e: DfaissError, method: string): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    const logged =
      e instanceof AuthError ? new AuthError(`client ${this.conn.remote} refused: ${e.message}`) : e;
    this.reported = logged;
    this.server.report(logged, { remote: this.conn.remote, method });
    // The error reply explains the refusal; close() flushes it before the FIN.
    this.sendReply({ v: this.server.version, id, ok: false, error: errorToWire(e) }).catch(() => {});
    this.conn.close();
  }

  private authError(message: string): void {
    const err = new AuthError(message);
    this.reported = err;
    this.server.report(err, { remote: this.conn.remote });
    this.conn.close(err);
  }

  private protocolError(message: string): void {
    const err = new ProtocolError(message);
    this.reported = err;
    this.server.report(err, { remote: this.conn.remote });
    this.conn.close(err);
  }
}

function checkAttachments(rule: AttachmentRule, got: readonly Attachment[]): void {
  const required = rule.filter((r) => !r.endsWith('?')).length;
  if (got.length < required || got.length > rule.length) {
    throw new ValidationError('attachments', `${required === rule.length ? '' : `${required} to `}${rule.length} attachments (${rule.join(', ')})`, got.length);
  }
  for (let i = 0; i < got.length; i++) {
    const want = (rule[i] as string).replace('?', '');
    const have = dtypeOf(got[i]);
    if (have !== want) throw new ValidationError(`attachments[${i}]`, `dtype ${want}`, got[i]);
  }
}
