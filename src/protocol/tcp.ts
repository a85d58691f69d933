/**
 * TCP transport over node:net: Nagle off (small search frames must not wait 40 ms for an
 * ACK), TCP keep-alive on (dead peers surface as errors), frames written with cork/uncork
 * so a header and its multi-MiB attachments go out as one writev without concatenation.
 */
import net from 'node:net';
import { ConnectionError, DfaissError, ProtocolError, TimeoutError } from '../errors.js';
import { FrameAssembler, type RawFrame } from './assembler.js';
import { errorToWire } from './errors-wire.js';
import { DEFAULT_MAX_FRAME_BYTES, MAX_FRAME_BYTES_LIMIT, PROTOCOL_VERSION, decodeFrame, encodeFrame } from './frame.js';
import { BufferPool } from './pool.js';
import type { ConnectOptions, Connection, ConnectionOptions, ListenOptions, Listener, ReceivedFrame, Transport } from './transport.js';

export function formatHostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? '?';
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? '?'}`;
}

export function checkMaxFrameBytes(n: number): number {
  if (!Number.isInteger(n) || n < 1024 || n > MAX_FRAME_BYTES_LIMIT) {
    throw new RangeError(`maxFrameBytes must be an integer between 1024 and ${MAX_FRAME_BYTES_LIMIT}, got ${n}`);
  }
  return n;
}

/** A Connection over any stream socket (net.Socket or tls.TLSSocket). */
export class SocketConnection implements Connection {
  readonly remote: string;
  private readonly assembler: FrameAssembler;
  private frameHandler: ((frame: ReceivedFrame) => void) | undefined;
  private readonly closeHandlers: ((reason: Error | undefined) => void)[] = [];
  private readonly pendingSends = new Set<(err: Error) => void>();
  private readonly closeGraceMs: number;
  private closing = false;
  private isClosed = false;
  private reason: Error | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private readonly frameTimeoutMs: number;
  private frameTimer: NodeJS.Timeout | undefined;
  private paused = false;

  /** Any byte received yet (see quietEnd). */
  private receivedAny = false;

  /**
   * `quietEnd`: the reason to report when the peer ends the connection before sending a
   * single byte (a TLS server refusing a client certificate after a TLS 1.3 handshake does
   * just that, with no alert the client could show).
   */
  constructor(
    private readonly socket: net.Socket,
    opts: ConnectionOptions = {},
    remote?: string,
    private readonly quietEnd?: () => Error,
  ) {
    this.remote = remote ?? formatHostPort(socket.remoteAddress, socket.remotePort);
    this.closeGraceMs = opts.closeGraceMs ?? 1000;
    this.frameTimeoutMs = opts.frameTimeoutMs ?? 0;
    this.assembler = new FrameAssembler(
      { maxFrameBytes: checkMaxFrameBytes(opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES), pool: new BufferPool(opts.pool) },
      (raw) => this.deliver(raw),
    );
    socket.on('error', (err) => {
      this.reason ??= new ConnectionError(`connection to ${this.remote} failed: ${err.message}`, { cause: err });
    });
    socket.on('end', () => {
      if (this.closing) return;
      if (!this.receivedAny && this.quietEnd) this.reason ??= this.quietEnd();
      const size = this.assembler.partialFrameSize;
      const have = this.assembler.partialBytes;
      if (have > 0) {
        this.reason ??= new ProtocolError(
          `${this.remote} closed the connection in the middle of a frame (${have} of ${size ?? 'at least 16'} bytes received)`,
        );
      }
    });
    socket.on('close', () => this.finish());
  }

  get closed(): boolean {
    return this.isClosed;
  }

  send(parts: readonly Uint8Array[]): Promise<void> {
    const socket = this.socket;
    if (this.closing || this.isClosed || !socket.writable) {
      return Promise.reject(new ConnectionError(`cannot send to ${this.remote}: the connection is closed`));
    }
    return new Promise<void>((resolve, reject) => {
      const onClose = (err: Error): void => reject(err);
      this.pendingSends.add(onClose);
      const done = (err?: Error | null): void => {
        this.pendingSends.delete(onClose);
        if (err) reject(new ConnectionError(`writing to ${this.remote} failed: ${err.message}`, { cause: err }));
        else resolve();
      };
      const last = parts.length - 1;
      socket.cork();
      for (let i = 0; i < last; i++) socket.write(parts[i] as Uint8Array);
      socket.write(parts[last] ?? new Uint8Array(0), done);
      socket.uncork();
    });
  }

  onFrame(handler: (frame: ReceivedFrame) => void): void {
    const first = this.frameHandler === undefined;
    this.frameHandler = handler;
    if (first) this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  onClose(handler: (reason: Error | undefined) => void): void {
    if (this.isClosed) queueMicrotask(() => handler(this.reason));
    else this.closeHandlers.push(handler);
  }

  setMaxFrameBytes(bytes: number): void {
    this.assembler.maxFrameBytes = checkMaxFrameBytes(bytes);
  }

  pause(): void {
    // We stopped reading, so a stalled frame is our doing: no frame deadline meanwhile.
    this.paused = true;
    this.clearFrameTimer();
    this.assembler.pause();
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    // Without a 'data' listener, resuming the socket would drop bytes on the floor.
    if (this.frameHandler && !this.closing) this.socket.resume();
    this.assembler.resume();
    this.armFrameTimer();
  }

  close(reason?: DfaissError): void {
    if (this.closing || this.isClosed) return;
    this.closing = true;
    this.clearFrameTimer();
    if (reason) this.reason ??= reason;
    this.assembler.destroy();
    const socket = this.socket;
    if (socket.destroyed) return; // 'close' is on its way
    if (reason && socket.writable) {
      try {
        // Goodbye frame: an error reply with id 0 tells the peer why it is being dropped.
        const { parts } = encodeFrame({ v: PROTOCOL_VERSION, id: 0, ok: false, error: errorToWire(reason) });
        for (const p of parts) socket.write(p);
      } catch {
        // best effort
      }
    }
    socket.end();
    // Give the peer time to read the goodbye and close its side; closing first with unread
    // input would make our kernel send RST, which can discard the goodbye on the peer.
    this.graceTimer = setTimeout(() => socket.destroy(), this.closeGraceMs);
    this.graceTimer.unref();
    socket.resume(); // keep draining (and ignoring) input so the peer's FIN is seen
  }

  destroy(reason?: Error): void {
    if (reason) this.reason ??= reason;
    this.closing = true;
    this.clearFrameTimer();
    this.assembler.destroy();
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.receivedAny = true;
    if (this.closing) return;
    try {
      this.assembler.push(chunk);
      // New bytes are progress: the deadline restarts, or ends at a frame boundary.
      this.armFrameTimer();
    } catch (err) {
      this.close(
        err instanceof DfaissError
          ? err
          : new ConnectionError(`internal error handling data from ${this.remote}: ${(err as Error)?.message ?? err}`, { cause: err }),
      );
    }
  }

  /** (Re)starts the mid-frame deadline while part of a frame is held, else clears it. */
  private armFrameTimer(): void {
    this.clearFrameTimer();
    if (this.frameTimeoutMs <= 0 || this.paused || this.closing || this.assembler.partialBytes === 0) return;
    this.frameTimer = setTimeout(() => {
      this.frameTimer = undefined;
      const have = this.assembler.partialBytes;
      if (this.paused || this.closing || have === 0) return;
      const size = this.assembler.partialFrameSize;
      this.close(
        new ProtocolError(
          `${this.remote} sent ${have} of ${size ?? 'at least 16'} bytes of a frame and then nothing for ${this.frameTimeoutMs} ms; closing the connection`,
        ),
      );
    }, this.frameTimeoutMs);
    this.frameTimer.unref();
  }

  private clearFrameTimer(): void {
    if (this.frameTimer) clearTimeout(this.frameTimer);
    this.frameTimer = undefined;
  }

  private deliver(raw: RawFrame): void {
    let frame: ReceivedFrame;
    try {
      const { envelope, attachments } = decodeFrame(raw.bytes);
      frame = { envelope, attachments, byteLength: raw.bytes.byteLength, release: raw.release };
    } catch (err) {
      raw.release();
      throw err;
    }
    (this.frameHandler as (frame: ReceivedFrame) => void)(frame);
  }

  private finish(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closing = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.clearFrameTimer();
    this.assembler.destroy();
    const err = new ConnectionError(`connection to ${this.remote} closed`, { cause: this.reason });
    for (const reject of this.pendingSends) reject(err);
    this.pendingSends.clear();
    for (const h of this.closeHandlers.splice(0)) {
      try {
        h(this.reason);
      } catch {
        // a close handler's bug must not stop the others
      }
    }
  }
}

export interface TcpTransportOptions {
  /** TCP_NODELAY. Default true. */
  noDelay?: boolean;
  /** TCP keep-alive initial delay in ms; 0 disables. Default 15 000. */
  keepAliveMs?: number;
}

export class TcpTransport implements Transport {
  private readonly noDelay: boolean;
  private readonly keepAliveMs: number;

  constructor(opts: TcpTransportOptions = {}) {
    this.noDelay = opts.noDelay ?? true;
    this.keepAliveMs = opts.keepAliveMs ?? 15_000;
  }

  connect(host: string, port: number, opts: ConnectOptions = {}): Promise<Connection> {
    const remote = formatHostPort(host, port);
    return awaitConnected(net.connect({ host, port }), 'connect', remote, opts, (socket) => this.configure(socket));
  }

  listen(host: string, port: number, onConnection: (conn: Connection) => void, opts: ListenOptions = {}): Promise<Listener> {
    checkMaxFrameBytes(opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    return listenOn(host, port, opts, () =>
      net.createServer((socket) => {
        this.configure(socket);
        acceptConnection(socket, opts, onConnection);
      }),
    );
  }

  private configure(socket: net.Socket): void {
    configureSocket(socket, this.noDelay, this.keepAliveMs);
  }
}

/** TCP_NODELAY and keep-alive, as both transports set them on every socket. */
export function configureSocket(socket: net.Socket, noDelay: boolean, keepAliveMs: number): void {
  socket.setNoDelay(noDelay);
  if (keepAliveMs > 0) socket.setKeepAlive(true, keepAliveMs);
}

/** Wraps an accepted socket and hands it over; neither a socket error nor the acceptor can throw out of here. */
export function acceptConnection(socket: net.Socket, opts: ListenOptions, onConnection: (conn: Connection) => void): void {
  // An 'error' between accept and wrapping must not become an uncaught exception.
  socket.on('error', () => {});
  try {
    onConnection(new SocketConnection(socket, opts));
  } catch {
    socket.destroy(); // a bug in the acceptor must not become an uncaught exception
  }
}

/** Creates the server (TCP or TLS) and listens; resolves once it is bound. */
export function listenOn(host: string, port: number, opts: ListenOptions, create: () => net.Server): Promise<Listener> {
  return new Promise<Listener>((resolve, reject) => {
    const server = create();
    if (opts.maxConnections) server.maxConnections = opts.maxConnections;
    const onError = (err: Error): void => reject(new ConnectionError(`cannot listen on ${formatHostPort(host, port)}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      server.on('error', () => {}); // accept errors (EMFILE...) are per-connection; keep serving
      const addr = server.address() as net.AddressInfo;
      let closing: Promise<void> | undefined;
      resolve({
        host,
        port: addr.port,
        close: () => (closing ??= new Promise<void>((res) => server.close(() => res()))),
      });
    });
  });
}

/**
 * Resolves with a Connection once `socket` emits `readyEvent` ('connect', or 'secureConnect'
 * for TLS), within opts.timeoutMs (default 10 s). `explain` may turn a socket error into a
 * more specific one (TLS certificate problems).
 */
export function awaitConnected<S extends net.Socket>(
  socket: S,
  readyEvent: 'connect' | 'secureConnect',
  remote: string,
  opts: ConnectOptions,
  configure: (socket: S) => void,
  explain: (err: Error) => Error | undefined = () => undefined,
  quietEnd?: () => Error,
): Promise<Connection> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const what = readyEvent === 'secureConnect' ? `${remote} (TLS)` : remote;
  return new Promise<Connection>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TimeoutError(`connecting to ${what} timed out after ${timeoutMs} ms: is the server up and reachable?`));
    }, timeoutMs);
    const onError = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(explain(err) ?? new ConnectionError(`cannot connect to ${remote}: ${err.message}`, { cause: err }));
    };
    socket.once('error', onError);
    socket.once(readyEvent, () => {
      clearTimeout(timer);
      socket.off('error', onError);
      configure(socket);
      try {
        resolve(new SocketConnection(socket, opts, remote, quietEnd));
      } catch (err) {
        socket.destroy();
        reject(err);
      }
    });
  });
}
