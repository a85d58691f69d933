/**
 * Errors on the wire: {code, message, field?, expected?, indexId?}. The receiver rebuilds
 * the class from src/errors.ts whose `code` matches, so `err instanceof UnknownIndexError`
 * works on the client exactly as on the server.
 */
import * as errors from '../errors.js';
import { DfaissError, RemoteError, UnknownIndexError, ValidationError } from '../errors.js';
import type { WireError } from './codec.js';

type ErrorClass = new (...args: never[]) => DfaissError;

/**
 * code -> class, discovered from the exports of src/errors.ts so classes that other modules
 * append there later travel without touching this file. `code` is an instance field, so
 * each class is probed once with placeholder arguments.
 */
const CLASSES: ReadonlyMap<string, ErrorClass> = (() => {
  const map = new Map<string, ErrorClass>();
  for (const value of Object.values(errors)) {
    if (typeof value !== 'function' || !(value === DfaissError || value.prototype instanceof DfaissError)) continue;
    try {
      const probe = new (value as unknown as new (a: string, b: string) => DfaissError)('?', '?');
      if (!map.has(probe.code)) map.set(probe.code, value as unknown as ErrorClass);
    } catch {
      // A constructor that rejects placeholder args cannot be rebuilt generically; it arrives as RemoteError.
    }
  }
  return map;
})();

export function errorToWire(err: unknown): WireError {
  if (err instanceof DfaissError) {
    const out: WireError = { code: err.code, message: err.message };
    const extra = err as unknown as Record<string, unknown>;
    if (typeof extra.field === 'string') out.field = extra.field;
    if (typeof extra.expected === 'string') out.expected = extra.expected;
    if (typeof extra.indexId === 'string') out.indexId = extra.indexId;
    return out;
  }
  // Anything else is a bug on the sending side; its message helps, its stack stays home.
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return { code: 'REMOTE', message: `internal server error: ${message}` };
}

/** Rebuilds the DfaissError subclass named by `w.code`; unknown codes become RemoteError. */
export function errorFromWire(w: WireError): DfaissError {
  let err: DfaissError;
  if (w.code === 'VALIDATION') {
    err = new ValidationError(w.field ?? '(unknown field)', w.expected ?? '(not given)');
  } else if (w.code === 'UNKNOWN_INDEX') {
    err = new UnknownIndexError(w.indexId ?? '');
  } else {
    const Cls = CLASSES.get(w.code);
    if (Cls === undefined) return new RemoteError(`[${w.code}] ${w.message}`);
    try {
      err = new (Cls as unknown as new (m: string) => DfaissError)(w.message);
    } catch {
      return new RemoteError(`[${w.code}] ${w.message}`);
    }
  }
  // The sender's message is authoritative (constructors may have composed a different one).
  err.message = w.message;
  return err;
}

/** Codes this build can rebuild into their own classes (for docs and tests). */
export function knownErrorCodes(): string[] {
  return [...CLASSES.keys()].sort();
}
