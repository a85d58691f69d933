/**
 * Envelope codec: the msgpack part of a frame (see docs/protocol.md).
 *
 * Envelopes carry only plain data (nil, bool, int, float64, str, array, map, and
 * 64-bit ints as bigint). Tensors never travel here: they are frame attachments.
 * The decoder rejects every msgpack extension type (msgpackr would otherwise turn
 * peer bytes into Dates, Sets, RegExps, Errors or copied typed arrays), and the
 * encoder rejects typed arrays and class instances so a caller cannot silently send
 * a Float32Array as a slow msgpack value.
 */
import { Packr, Unpackr, type Options } from 'msgpackr';
import { ProtocolError, ValidationError, describe } from '../errors.js';

/** An error as it travels in a reply. `code` selects the class on the receiving side. */
export interface WireError {
  code: string;
  message: string;
  field?: string;
  expected?: string;
  indexId?: string;
}

export interface RequestEnvelope {
  v: number;
  id: number;
  method: string;
  args?: unknown;
}
export interface OkReplyEnvelope {
  v: number;
  id: number;
  ok: true;
  result?: unknown;
}
export interface ErrorReplyEnvelope {
  v: number;
  id: number;
  ok: false;
  error: WireError;
}
export type ReplyEnvelope = OkReplyEnvelope | ErrorReplyEnvelope;
export type Envelope = RequestEnvelope | ReplyEnvelope;

/** [dtype name, byte length] of one attachment, in frame order. */
export type AttachmentDescriptor = [dtype: string, byteLength: number];

export function isRequest(e: Envelope): e is RequestEnvelope {
  return 'method' in e;
}

/** Nesting limit for args/results; deeper data is refused rather than risking stack overflow. */
export const MAX_DEPTH = 64;
/** Upper bound on attachments per frame; keeps descriptor parsing trivially bounded. */
export const MAX_ATTACHMENTS = 4096;
const MAX_METHOD_LENGTH = 128;
const MAX_ERROR_TEXT = 4096;

// skipValues drops `undefined` object members (optional fields), encodeUndefinedAsNil turns
// any other undefined into nil: either way no msgpack extension type is ever written.
const packr = new Packr({
  useRecords: false,
  variableMapSize: true,
  encodeUndefinedAsNil: true,
  skipValues: [undefined],
} as Options & { skipValues: unknown[] });

// 'auto': 64-bit ints become numbers when safe, bigint otherwise (typing lacks 'auto').
const unpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  structuredClone: false,
  int64AsType: 'auto',
} as unknown as Options);

/** Serialises an envelope; throws ValidationError when args/result hold non-plain data. */
export function packEnvelope(env: Envelope, att: readonly AttachmentDescriptor[]): Uint8Array {
  const wire: Record<string, unknown> = { v: env.v, id: env.id };
  if (isRequest(env)) {
    wire.method = env.method;
    if (env.args !== undefined) {
      assertPlain(env.args, 'args');
      wire.args = env.args;
    }
  } else {
    wire.ok = env.ok;
    if (env.ok) {
      if (env.result !== undefined) {
        assertPlain(env.result, 'result');
        wire.result = env.result;
      }
    } else {
      wire.error = env.error;
    }
  }
  if (att.length > 0) wire.att = att;
  try {
    return packr.pack(wire);
  } catch (err) {
    // e.g. a bigint beyond 64 bits
    throw new ValidationError(isRequest(env) ? 'args' : 'result', `msgpack-encodable data (${(err as Error)?.message ?? err})`);
  }
}

/** Parses and validates an envelope; every failure is a ProtocolError. */
export function unpackEnvelope(bytes: Uint8Array): { envelope: Envelope; att: AttachmentDescriptor[] } {
  let raw: unknown;
  try {
    // A Buffer view (no copy) lets msgpackr use Buffer's fast utf8 decoding.
    raw = unpackr.unpack(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (err) {
    throw new ProtocolError(`undecodable frame envelope: ${(err as Error)?.message ?? String(err)}`);
  }
  if (!isPlainObject(raw)) throw new ProtocolError(`frame envelope must be a msgpack map, got ${describe(raw)}`);
  const bad = findNonPlain(raw, 0, false);
  if (bad) {
    throw new ProtocolError(
      `frame envelope field ${bad.path || '(root)'} holds ${describe(bad.value)}: only plain msgpack types are allowed${bad.tooDeep ? ` and at most ${MAX_DEPTH} levels of nesting` : ''}`,
    );
  }
  const v = raw.v;
  const id = raw.id;
  if (!isUint(v, 0xffff)) throw new ProtocolError(`frame envelope field 'v' must be an integer 0..65535, got ${describe(v)}`);
  if (!isUint(id, 0xffffffff)) throw new ProtocolError(`frame envelope field 'id' must be an integer 0..2^32-1, got ${describe(id)}`);
  const att = parseDescriptors(raw.att);
  const hasMethod = raw.method !== undefined;
  const hasOk = raw.ok !== undefined;
  if (hasMethod === hasOk) throw new ProtocolError("frame envelope must carry exactly one of 'method' (request) or 'ok' (reply)");
  if (hasMethod) {
    const method = raw.method;
    if (typeof method !== 'string' || method.length === 0 || method.length > MAX_METHOD_LENGTH) {
      throw new ProtocolError(`frame envelope field 'method' must be a string of 1..${MAX_METHOD_LENGTH} characters, got ${describe(method)}`);
    }
    return { envelope: { v, id, method, args: raw.args }, att };
  }
  if (raw.ok === true) return { envelope: { v, id, ok: true, result: raw.result }, att };
  if (raw.ok !== false) throw new ProtocolError(`frame envelope field 'ok' must be a boolean, got ${describe(raw.ok)}`);
  return { envelope: { v, id, ok: false, error: parseWireError(raw.error) }, att };
}

function parseDescriptors(value: unknown): AttachmentDescriptor[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || value.length > MAX_ATTACHMENTS) {
    throw new ProtocolError(`frame envelope field 'att' must be an array of at most ${MAX_ATTACHMENTS} [dtype, byteLength] pairs`);
  }
  return value.map((d, i) => {
    if (!Array.isArray(d) || d.length !== 2 || typeof d[0] !== 'string' || !isUint(d[1], Number.MAX_SAFE_INTEGER)) {
      throw new ProtocolError(`frame envelope field att[${i}] must be [dtype: string, byteLength: uint], got ${describe(d)}`);
    }
    return [d[0], d[1]] as AttachmentDescriptor;
  });
}

function parseWireError(value: unknown): WireError {
  if (!isPlainObject(value) || typeof value.code !== 'string' || typeof value.message !== 'string') {
    throw new ProtocolError(`error reply must carry error: {code: string, message: string}, got ${describe(value)}`);
  }
  const out: WireError = { code: clip(value.code, 64), message: clip(value.message, MAX_ERROR_TEXT) };
  for (const key of ['field', 'expected', 'indexId'] as const) {
    const x = value[key];
    if (typeof x === 'string') out[key] = clip(x, MAX_ERROR_TEXT);
  }
  return out;
}

function clip(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 3)}...` : s;
}

function isUint(x: unknown, max: number): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= max;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== 'object' || Array.isArray(x)) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/** Throws a ValidationError naming the first non-plain value inside `value` (rooted at `root`). */
export function assertPlain(value: unknown, root: string, opts: { allowBytes?: boolean } = {}): void {
  const bad = findNonPlain(value, 0, opts.allowBytes ?? false);
  if (!bad) return;
  const field = `${root}${bad.path}`;
  if (bad.tooDeep) throw new ValidationError(field, `at most ${MAX_DEPTH} levels of nesting`);
  throw new ValidationError(
    field,
    ArrayBuffer.isView(bad.value)
      ? 'plain data; send typed arrays as call attachments, not inside args/results'
      : 'plain data (null, boolean, number, bigint, string, array or plain object)',
    bad.value,
  );
}

interface NonPlain {
  path: string;
  value: unknown;
  tooDeep?: boolean;
}

/** `allowBytes`: Uint8Array (and Buffer) values are plain too (msgpack bin, for metadata). */
function findNonPlain(value: unknown, depth: number, allowBytes: boolean): NonPlain | null {
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      return null;
    case 'object': {
      if (value === null) return null;
      if (allowBytes && value instanceof Uint8Array && (value.constructor === Uint8Array || Buffer.isBuffer(value))) return null;
      if (depth >= MAX_DEPTH) return { path: '', value, tooDeep: true };
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const v = value[i];
          if (v === null || (typeof v !== 'object' && typeof v !== 'function' && typeof v !== 'symbol')) continue;
          const bad = findNonPlain(v, depth + 1, allowBytes);
          if (bad) return { ...bad, path: `[${i}]${bad.path}` };
        }
        return null;
      }
      if (!isPlainObject(value)) return { path: '', value };
      for (const key in value) {
        const bad = findNonPlain(value[key], depth + 1, allowBytes);
        if (bad) return { ...bad, path: `.${key}${bad.path}` };
      }
      return null;
    }
    default:
      return { path: '', value };
  }
}
