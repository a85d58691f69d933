/**
 * RPC client: one instance per server connection. Many calls can be in flight at once;
 * replies are matched by request id, so they may arrive in any order. Opening a second
 * client to the same server (e.g. bulk adds on one, searches on the other) is just another
 * TCP connection, with its own queue and receive buffers.
 */
import { AuthError, ConnectionError, DfaissError, ProtocolError, TimeoutError, ValidationError } from '../errors.js';
import { AUTH_SCHEME, clientProof, newNonce, proofsEqual, secretBytes, serverProof, type Secret } from './auth.js';
import { isRequest } from './codec.js';
import { errorFromWire } from './errors-wire.js';
import { DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, encodeFrame, type Attachment, type EncodedFrame } from './frame.js';
import { AUTH_METHOD, HANDSHAKE_METHODS, HELLO_METHOD, authResultSchema, helloResultSchema, type ServerInfo } from './hello.js';
import type { PoolOptions } from './pool.js';
import { TcpTransport, checkMaxFrameBytes, formatHostPort } from './tcp.js';
import { TlsTransport, explainTlsError, type TlsClientOptions } from './tls.js';
import type { Connection, ReceivedFrame, Transport } from './transport.js';

export interface RpcClientOptions {
  /** Custom transport. Default: TLS when `tls` is given, else plain TCP. */
  transport?: Transport;
  /** Connect with TLS, verifying the server's certificate (ignored when `transport` is given). */
  tls?: TlsClientOptions;
  /**
   * Shared secret of servers that require authentication (at least 16 bytes). With it, the
   * client also insists that the server proves it knows the secret, so it refuses servers
   * without one. The secret itself is never sent.
   */
  secret?: Secret;
  /** Deadline for TCP connect plus hello. Default 10 000 ms. */
  connectTimeoutMs?: number;
  /** Default per-call deadline; 0 = none. Default 120 000 ms. */
  callTimeoutMs?: number;
  /** Calls sent but not yet answered; further calls wait in a local FIFO. Default 32. */
  maxInFlight?: number;
  /** Largest reply frame accepted (told to the server in hello). Default 256 MiB. */
  maxFrameBytes?: number;
  /** Receive-buffer pool for large replies. */
  pool?: PoolOptions;
  /** Sent in hello for the server's logs. */
  clientName?: string;
  /** Override for tests only. */
  protocolVersion?: number;
}

export interface CallOptions {
  /** Deadline for this call, queueing included; 0 = none. Defaults to the client's callTimeoutMs. */
  timeoutMs?: number;
  /** Aborting rejects the call locally (the server may still run it). */
  signal?: AbortSignal;
}

export interface CallResult<R = unknown> {
  /** The server's result, as sent (not validated here). */
  result: R;
  /** Zero-copy views into the reply frame. */
  attachments: Attachment[];
  /**
   * Optional: lets the reply's receive buffer be reused for the next large reply. Only call
   * it once you no longer use `attachments` (copy what you keep first).
   */
  release(): void;
}

interface PendingCall {
  readonly method: string;
  readonly args: unknown;
  readonly attachments: readonly Attachment[];
  readonly resolve: (r: CallResult) => void;
  readonly reject: (e: Error) => void;
  state: 'queued' | 'sent' | 'done';
  /** The request has been handed to the OS: the caller's attachment memory is free again. */
  written: boolean;
  id: number;
  timer?: NodeJS.Timeout;
  unlisten?: () => void;
}

export class RpcClient {
  /** "host:port" of the server. */
  readonly remote: string;
  private info: ServerInfo | undefined;
  private readonly conn: Connection;
  private readonly version: number;
  private readonly callTimeoutMs: number;
  private readonly maxInFlight: number;
  private readonly pending = new Map<number, PendingCall>();
  private readonly queue: PendingCall[] = [];
  private lastId = 0;
  private goodbye: DfaissError | undefined;
  private closedBy: Error | undefined;
  private isClosed = false;
  private readonly closeHandlers: ((reason: Error | undefined) => void)[] = [];
  private readonly closedPromise: Promise<void>;
  /** For hints in handshake errors. */
  private usesTls = false;

  /** Connects, exchanges hello, and resolves once the server accepted this client. */
  static async connect(host: string, port: number, opts: RpcClientOptions = {}): Promise<RpcClient> {
    const secret = opts.secret === undefined ? undefined : secretBytes(opts.secret);
    const transport = opts.transport ?? (opts.tls ? new TlsTransport({ client: opts.tls }) : new TcpTransport());
    const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    const maxFrameBytes = checkMaxFrameBytes(opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    const started = Date.now();
    const conn = await transport.connect(host, port, { timeoutMs: connectTimeoutMs, maxFrameBytes, pool: opts.pool });
    const client = new RpcClient(conn, formatHostPort(host, port), opts);
    client.usesTls = transport instanceof TlsTransport;
    const remaining = (): number => Math.max(1, connectTimeoutMs - (Date.now() - started));
    try {
      const clientNonce = secret ? newNonce() : undefined;
      const { result } = await client.enqueue(
        HELLO_METHOD,
        { version: client.version, nonce: clientNonce, maxFrameBytes, client: opts.clientName },
        [],
        { timeoutMs: remaining() },
      );
      const parsed = helloResultSchema.safeParse(result);
      if (!parsed.success) throw new ProtocolError(`server ${client.remote} sent a malformed hello reply; is it a dfaiss server?`);
      const info = parsed.data;
      if (info.version !== client.version) {
        throw new ProtocolError(
          `server ${client.remote} speaks protocol version ${info.version} but this client speaks version ${client.version}: run the same dfaiss version on clients and servers`,
        );
      }
      if (secret && clientNonce) {
        await client.authenticate(info, secret, clientNonce, remaining());
      } else if (info.auth) {
        throw new AuthError(
          `server ${client.remote} requires a shared secret: pass { secret } (IndexClient / RpcClient option), or --secret-file / DFAISS_SECRET on the command line`,
        );
      }
      client.info = info;
      return client;
    } catch (err) {
      conn.close();
      throw client.handshakeError(err);
    }
  }

  /** Second handshake step: proves the secret to the server and checks the server's proof. */
  private async authenticate(info: ServerInfo, secret: Buffer, clientNonce: string, timeoutMs: number): Promise<void> {
    if (!info.auth) {
      throw new AuthError(
        `server ${this.remote} did not ask this client to authenticate, so it cannot prove it knows the shared secret: start it with the same secret (--secret-file / DFAISS_SECRET), or connect without one if the server is meant to be open`,
      );
    }
    if (info.auth.scheme !== AUTH_SCHEME) {
      throw new AuthError(`server ${this.remote} asks for authentication scheme '${info.auth.scheme}', but this client only knows '${AUTH_SCHEME}': run the same dfaiss version on clients and servers`);
    }
    const proof = clientProof(secret, info.auth.nonce, clientNonce, this.version);
    const { result } = await this.enqueue(AUTH_METHOD, { proof }, [], { timeoutMs });
    const parsed = authResultSchema.safeParse(result);
    const expected = serverProof(secret, clientNonce, info.auth.nonce, this.version);
    if (!parsed.success || !proofsEqual(expected, parsed.data.proof)) {
      throw new AuthError(
        `server ${this.remote} could not prove that it knows the shared secret: it is not the server you expect, or it uses a different secret`,
      );
    }
  }

  /** Adds the server's address and, for TLS failures, what to do about them. */
  private handshakeError(err: unknown): unknown {
    // The deepest TLS error in the cause chain is the most precise one.
    let tlsErr: DfaissError | undefined;
    for (let e: unknown = err; e instanceof Error; e = e.cause) tlsErr = explainTlsError(e, this.remote) ?? tlsErr;
    if (tlsErr) return tlsErr;
    if (err instanceof AuthError && !err.message.includes(this.remote)) {
      return new AuthError(`server ${this.remote} refused this client: ${err.message}`, { cause: err });
    }
    if (err instanceof ProtocolError && !err.message.includes(this.remote)) {
      return new ProtocolError(`handshake with ${this.remote} failed: ${err.message}`, { cause: err });
    }
    if (err instanceof ConnectionError && !this.usesTls && /closed by the server|ECONNRESET/.test(err.message)) {
      return new ConnectionError(`${err.message}; if that server uses TLS, connect with tls options (tls.ca)`, { cause: err });
    }
    return err;
  }

  private constructor(conn: Connection, remote: string, opts: RpcClientOptions) {
    this.conn = conn;
    this.remote = remote;
    this.version = opts.protocolVersion ?? PROTOCOL_VERSION;
    this.callTimeoutMs = opts.callTimeoutMs ?? 120_000;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 32);
    this.closedPromise = new Promise<void>((resolve) => {
      conn.onClose((reason) => {
        this.onClosed(reason);
        resolve();
      });
    });
    conn.onFrame((frame) => this.onFrame(frame));
  }

  /** What the server announced in hello (rank, version, capabilities, maxFrameBytes). */
  get server(): ServerInfo {
    return this.info as ServerInfo;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Calls sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Calls waiting for an in-flight slot. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Calls `method` on the server. Attachments are sent without copying: do not modify them
   * until the returned promise settles. Rejects with the server's error rebuilt as its own
   * class (ValidationError, UnknownIndexError, ...), TimeoutError after the deadline, or
   * ConnectionError / ProtocolError when the connection is lost.
   */
  call<R = unknown>(method: string, args?: unknown, attachments: readonly Attachment[] = [], opts: CallOptions = {}): Promise<CallResult<R>> {
    if (HANDSHAKE_METHODS.includes(method)) {
      return Promise.reject(new ValidationError('method', `a method other than '${method}' (reserved for the handshake)`, method));
    }
    return this.enqueue(method, args, attachments, opts) as Promise<CallResult<R>>;
  }

  /** Calls fn when the connection is gone (reason undefined = closed by this client). */
  onClose(fn: (reason: Error | undefined) => void): void {
    if (this.isClosed) queueMicrotask(() => fn(this.closedBy));
    else this.closeHandlers.push(fn);
  }

  /** Closes the connection; pending calls reject with ConnectionError. */
  close(): Promise<void> {
    if (!this.isClosed) {
      this.closedBy ??= new ConnectionError(`the client closed its connection to ${this.remote}`);
      this.conn.close();
    }
    return this.closedPromise;
  }

  private enqueue(method: string, args: unknown, attachments: readonly Attachment[], opts: CallOptions): Promise<CallResult> {
    if (this.isClosed || this.closedBy) {
      return Promise.reject(new ConnectionError(`cannot call '${method}': the connection to ${this.remote} is closed`));
    }
    return new Promise<CallResult>((resolve, reject) => {
      const call: PendingCall = { method, args, attachments, resolve, reject, state: 'queued', written: false, id: 0 };
      const timeoutMs = opts.timeoutMs ?? this.callTimeoutMs;
      if (timeoutMs > 0) {
        call.timer = setTimeout(() => {
          this.abandon(call, new TimeoutError(`call '${method}' to ${this.remote} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
      }
      const signal = opts.signal;
      if (signal) {
        const onAbort = (): void => {
          const reason: unknown = signal.reason;
          this.abandon(call, reason instanceof Error ? reason : new DfaissError(`call '${method}' to ${this.remote} was aborted`));
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        call.unlisten = () => signal.removeEventListener('abort', onAbort);
      }
      if (this.pending.size < this.maxInFlight) this.dispatch(call);
      else this.queue.push(call);
    });
  }

  private dispatch(call: PendingCall): void {
    call.id = this.nextId();
    let frame: EncodedFrame;
    try {
      frame = encodeFrame({ v: this.version, id: call.id, method: call.method, args: call.args }, call.attachments);
      const limit = this.info?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
      if (frame.byteLength > limit) {
        throw new ValidationError(
          `request frame of '${call.method}'`,
          `at most ${limit} bytes (the server's maxFrameBytes); split the data into smaller calls`,
          frame.byteLength,
        );
      }
    } catch (err) {
      this.settle(call);
      call.reject(err as Error);
      return;
    }
    call.state = 'sent';
    this.pending.set(call.id, call);
    this.conn.send(frame.parts).then(
      () => {
        call.written = true;
      },
      () => {
        // The close handler rejects every pending call with the reason, once.
      },
    );
  }

  private nextId(): number {
    do {
      this.lastId = this.lastId >= 0xffffffff ? 1 : this.lastId + 1;
    } while (this.pending.has(this.lastId));
    return this.lastId;
  }

  /** Marks a call finished: timers and listeners off, slot freed. */
  private settle(call: PendingCall): void {
    if (call.state === 'sent') this.pending.delete(call.id);
    call.state = 'done';
    if (call.timer) clearTimeout(call.timer);
    call.unlisten?.();
  }

  /** Gives up on a call locally (timeout/abort). A late reply for it is dropped. */
  private abandon(call: PendingCall, err: Error): void {
    if (call.state === 'done') return;
    if (call.state === 'queued') {
      const i = this.queue.indexOf(call);
      if (i >= 0) this.queue.splice(i, 1);
    }
    const unwritten = call.state === 'sent' && !call.written && call.attachments.length > 0;
    this.settle(call);
    if (unwritten) {
      // The request still sits in the socket's send queue, referencing the caller's memory.
      // Once we reject, the caller may reuse that memory, and the rest of the frame would go
      // out with the new contents. Drop the connection instead: the server discards the
      // truncated frame, and a send queue that did not drain within the deadline means the
      // connection is stalled anyway.
      this.closedBy ??= new ConnectionError(
        `connection to ${this.remote} dropped: call '${call.method}' gave up (${err.message}) while its request was still being sent`,
      );
      this.conn.destroy(this.closedBy);
    }
    call.reject(err);
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0 && this.pending.size < this.maxInFlight && !this.isClosed) {
      this.dispatch(this.queue.shift() as PendingCall);
    }
  }

  private onFrame(frame: ReceivedFrame): void {
    const env = frame.envelope;
    if (isRequest(env)) {
      frame.release();
      this.fail(new ProtocolError(`server ${this.remote} sent a request ('${env.method}'), but servers may only reply`));
      return;
    }
    if (env.id === 0) {
      // Goodbye: the server tells why it is closing; pending calls get this reason.
      frame.release();
      if (!env.ok) this.goodbye = errorFromWire(env.error);
      this.conn.close();
      return;
    }
    if (this.info && env.v !== this.version) {
      frame.release();
      this.fail(new ProtocolError(`server ${this.remote} replied with protocol version ${env.v}, but this connection agreed on ${this.version}`));
      return;
    }
    const call = this.pending.get(env.id);
    if (call === undefined) {
      frame.release(); // reply to a call that timed out or was aborted
      return;
    }
    this.settle(call);
    if (env.ok) {
      if (frame.attachments.length === 0) frame.release();
      call.resolve({ result: env.result, attachments: frame.attachments, release: frame.release });
    } else {
      frame.release();
      call.reject(errorFromWire(env.error));
    }
    this.pump();
  }

  private fail(err: DfaissError): void {
    this.closedBy ??= err;
    this.conn.close(err);
  }

  private onClosed(reason: Error | undefined): void {
    this.isClosed = true;
    const cause = this.goodbye ?? this.closedBy ?? reason;
    const calls = [...this.queue, ...this.pending.values()];
    this.queue.length = 0;
    for (const call of calls) {
      this.settle(call);
      call.reject(this.lostError(call.method, cause));
    }
    this.closedBy ??= cause ?? new ConnectionError(`connection to ${this.remote} closed by the server`);
    for (const fn of this.closeHandlers.splice(0)) {
      try {
        fn(cause);
      } catch {
        // one listener's bug must not stop the others
      }
    }
  }

  private lostError(method: string, cause: Error | undefined): DfaissError {
    const why = cause ? `: ${cause.message}` : ' (closed by the server)';
    const message = `connection to server ${this.remote} lost while call '${method}' was pending${why}`;
    if (cause instanceof AuthError) return new AuthError(message, { cause });
    return cause instanceof ProtocolError ? new ProtocolError(message, { cause }) : new ConnectionError(message, { cause });
  }
}
