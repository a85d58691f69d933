/** Per-call options: a deadline and an AbortSignal for one client call. */
import { ValidationError } from '../errors.js';

/**
 * Options every call of the client's main operations takes: a deadline for this call (instead
 * of callTimeoutMs) and an AbortSignal. An aborted call stops waiting at once and frees its
 * place (an add waiting for a slot never takes one).
 */
export interface CallControl {
  /** Deadline of this call in ms (per server request). @default callTimeoutMs */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Resolves or rejects as `p` does, or rejects with the signal's reason once it is aborted (`p` goes on unwatched). */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** The per-call options to pass on (a signal already aborted fails the call at once). */
export function callControl(opts: CallControl): CallControl {
  if (opts.timeoutMs !== undefined && (!Number.isSafeInteger(opts.timeoutMs) || opts.timeoutMs < 0)) {
    throw new ValidationError('timeoutMs', 'a non-negative integer of milliseconds (0 = no deadline)', opts.timeoutMs);
  }
  opts.signal?.throwIfAborted();
  return { ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}), ...(opts.signal ? { signal: opts.signal } : {}) };
}
