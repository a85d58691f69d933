/**
 * The seam between RPC and the byte stream. RpcClient/RpcServer only see these interfaces;
 * TcpTransport implements them over node:net, TlsTransport over node:tls (both wrap their
 * sockets in SocketConnection).
 */
import type { DfaissError } from '../errors.js';
import type { Envelope } from './codec.js';
import type { Attachment } from './frame.js';
import type { PoolOptions } from './pool.js';

/** One decoded frame. */
export interface ReceivedFrame {
  readonly envelope: Envelope;
  /** Zero-copy views into the frame; valid until release(). */
  readonly attachments: Attachment[];
  readonly byteLength: number;
  /**
   * Lets the receive buffer be reused. Idempotent and optional (an unreleased buffer is
   * garbage collected), but the attachments must not be touched after calling it.
   */
  release(): void;
}

export interface ConnectionOptions {
  /** Largest frame accepted; a bigger length prefix closes the connection. Default 256 MiB. */
  maxFrameBytes?: number;
  /** Receive-buffer pool for large frames (per connection). */
  pool?: PoolOptions;
  /** After close(), how long to wait for the peer to close before destroying the socket. Default 1000 ms. */
  closeGraceMs?: number;
  /**
   * Close the connection (ProtocolError) when a partly received frame gets no new bytes for
   * this long while reading; a connection idle between frames is never closed. 0 / absent = never.
   */
  frameTimeoutMs?: number;
}

export interface ConnectOptions extends ConnectionOptions {
  /** Give up connecting after this long (TimeoutError). Default 10 000 ms. */
  timeoutMs?: number;
}

export interface ListenOptions extends ConnectionOptions {
  /** Refuse connections beyond this many (0 = unlimited), silently: a hard cap at the socket level. */
  maxConnections?: number;
  /** Problems with connections that never reached onConnection (e.g. failed TLS handshakes). */
  onError?: (err: Error, info: { remote: string }) => void;
}

export interface Connection {
  /** "host:port" of the peer, for messages. */
  readonly remote: string;
  /** True once the underlying stream is gone. */
  readonly closed: boolean;
  /**
   * Writes one encoded frame (encodeFrame().parts) without concatenating its parts.
   * Resolves once the last byte was handed to the OS, so awaiting it is the backpressure
   * signal, and only then may the caller reuse attachment memory it passed in. Rejects
   * with ConnectionError if the connection closes first. Always handle the promise.
   */
  send(parts: readonly Uint8Array[]): Promise<void>;
  /** Sets the single frame consumer; reading from the peer starts with this call. */
  onFrame(handler: (frame: ReceivedFrame) => void): void;
  /** Called once when the connection is gone; `reason` is why (undefined = clean close). */
  onClose(handler: (reason: Error | undefined) => void): void;
  /** Changes the frame-size limit for frames whose header has not arrived yet. */
  setMaxFrameBytes(bytes: number): void;
  /** Stops delivering frames (at a frame boundary) and stops reading the socket. */
  pause(): void;
  resume(): void;
  /**
   * Closes gracefully. With a reason, the peer first gets it as a "goodbye" error frame
   * (id 0) so it can report why. Frames already delivered stay valid.
   */
  close(reason?: DfaissError): void;
  /**
   * Closes at once: unsent data is dropped, so memory passed to send() is no longer read
   * once this returns.
   */
  destroy(reason?: Error): void;
}

export interface Listener {
  readonly host: string;
  /** The bound port (the real one when 0 was requested). */
  readonly port: number;
  /** Stops accepting; resolves once every accepted connection has closed too. */
  close(): Promise<void>;
}

export interface Transport {
  connect(host: string, port: number, opts?: ConnectOptions): Promise<Connection>;
  listen(host: string, port: number, onConnection: (conn: Connection) => void, opts?: ListenOptions): Promise<Listener>;
}
