/**
 * One error class per failure kind. Every message says what was wrong and how to fix it.
 * `code` is stable and travels over the wire, so a client can rebuild the same class
 * from a server's error reply.
 */

export class DfaissError extends Error {
  /** Stable machine-readable kind, e.g. 'VALIDATION'. */
  readonly code: string = 'DFAISS';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An argument or config field has a bad value. `field` names it, `expected` says what is allowed. */
export class ValidationError extends DfaissError {
  override readonly code: string = 'VALIDATION';
  constructor(
    readonly field: string,
    readonly expected: string,
    received?: unknown,
  ) {
    super(`invalid ${field}: expected ${expected}${received === undefined ? '' : `, got ${describe(received)}`}`);
  }
}

/** FAISS itself raised an error; the message is FAISS's own. */
export class FaissError extends DfaissError {
  override readonly code: string = 'FAISS';
}

/** A GPU feature was requested but this FAISS build has no GPU support. */
export class GpuUnavailableError extends DfaissError {
  override readonly code: string = 'GPU_UNAVAILABLE';
}

/** The native addon could not be loaded (not built, or the system FAISS is missing). */
export class NativeLoadError extends DfaissError {
  override readonly code: string = 'NATIVE_LOAD';
}

/** The named index does not exist on the server. */
export class UnknownIndexError extends DfaissError {
  override readonly code: string = 'UNKNOWN_INDEX';
  constructor(readonly indexId: string) {
    super(`unknown index '${indexId}': create it with createIndex() or load it with loadIndex() first`);
  }
}

/** The operation is not possible in the index's current state (e.g. centroids before training). */
export class IndexStateError extends DfaissError {
  override readonly code: string = 'INDEX_STATE';
}

/** Network, framing or protocol failure talking to a server. */
export class ConnectionError extends DfaissError {
  override readonly code: string = 'CONNECTION';
}

/** Peer speaks a different protocol version. */
export class ProtocolError extends DfaissError {
  override readonly code: string = 'PROTOCOL';
}

/** A call did not finish within its deadline. */
export class TimeoutError extends DfaissError {
  override readonly code: string = 'TIMEOUT';
}

/** Persisting data failed (disk full, unwritable folder); nothing acknowledged earlier was touched. */
export class StorageError extends DfaissError {
  override readonly code: string = 'STORAGE';
}

/**
 * Authentication failed: wrong or missing shared secret, a server that cannot prove it knows
 * the secret, or a TLS certificate the other side does not trust. Not worth retrying as is.
 */
export class AuthError extends DfaissError {
  override readonly code: string = 'AUTH';
}

/**
 * The server cannot take the request now and did not store it, but will soon: its buffer of
 * vectors waiting for a training or their add is full (--max-buffered-mb). The client
 * resends adds that get it (IndexClientOptions.busyRetryMs); it surfaces only past that.
 */
export class ServerBusyError extends DfaissError {
  override readonly code: string = 'BUSY';
}

/** A server reported an error that has no more specific class here. */
export class RemoteError extends DfaissError {
  override readonly code: string = 'REMOTE';
}

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null || typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return `array(${value.length})`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as { length?: number }).length ?? value.byteLength})`;
  return value.constructor?.name ?? 'object';
}

/**
 * A server is known to be down (its connection is closed and reconnecting failed), so the
 * request was not sent. Unlike a ConnectionError during a call, nothing reached the server.
 */
export class ServerUnavailableError extends ConnectionError {
  override readonly code: string = 'UNAVAILABLE';
  constructor(
    readonly server: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
