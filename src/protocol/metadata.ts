/**
 * Per-vector metadata on the wire and at rest: each value is packed with msgpack on its
 * own, and a batch travels as two u8 attachments: the concatenated bytes ("blob") and
 * n+1 little-endian u32 offsets into it. The server stores the bytes as they came (no
 * decode/re-encode, no JS object per vector) and returns them with search hits.
 * Only plain data is allowed (no msgpack extension types), as in envelopes, plus binary
 * values: a Uint8Array travels as msgpack bin and comes back as a Uint8Array of its own.
 */
import { Packr, Unpackr, type Options } from 'msgpackr';
import { ValidationError } from '../errors.js';
import { assertPlain } from './codec.js';

const packr = new Packr({ useRecords: false, variableMapSize: true, encodeUndefinedAsNil: true } as Options);
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, structuredClone: false, int64AsType: 'auto' } as unknown as Options);

/** msgpack nil: the metadata of a vector added without any. */
export const NIL_METADATA = Uint8Array.of(0xc0);

export interface EncodedMetadata {
  blob: Uint8Array;
  /** n+1 offsets; item i is blob[offsets[i], offsets[i+1]). */
  offsets: Uint32Array;
}

/**
 * Packs one metadata value per vector; `undefined` or `null` metadata (the original's None)
 * means nil for every vector, and so does a null or undefined item.
 */
export function encodeMetadata(values: readonly unknown[] | undefined | null, n: number, field = 'metadata'): EncodedMetadata {
  if (values === null) values = undefined;
  if (values !== undefined && (!Array.isArray(values) || values.length !== n)) {
    throw new ValidationError(field, `an array with one entry per vector (${n})`, Array.isArray(values) ? `${values.length} entries` : values);
  }
  const out = new MetadataWriter(n);
  for (let i = 0; i < n; i++) {
    const v = values === undefined ? undefined : values[i];
    // Strings, small integers and booleans (most metadata) are written directly; the
    // rest goes through msgpackr. Both give standard msgpack, which is all the server sees.
    if (!(typeof v === 'string' ? out.string(v) : typeof v === 'number' ? out.int(v) : v === undefined || v === null ? out.raw(NIL_METADATA) : typeof v === 'boolean' && out.raw(v ? TRUE : FALSE))) {
      assertPlain(v, `${field}[${i}]`, BYTES);
      let bytes: Uint8Array;
      try {
        bytes = packr.pack(v);
      } catch (err) {
        throw new ValidationError(`${field}[${i}]`, `msgpack-serialisable plain data (${(err as Error).message})`);
      }
      out.raw(bytes);
    }
    if (out.length > 0xffffffff) throw new ValidationError(field, 'at most 4 GiB of packed metadata per batch');
    out.offsets[i + 1] = out.length;
  }
  return { blob: out.bytes(), offsets: out.offsets };
}

const TRUE = Uint8Array.of(0xc3);
const FALSE = Uint8Array.of(0xc2);

/** One batch's packed metadata, written into a growing buffer. */
class MetadataWriter {
  readonly offsets: Uint32Array;
  length = 0;
  private buf: Buffer;

  constructor(n: number) {
    this.offsets = new Uint32Array(n + 1);
    this.buf = Buffer.allocUnsafe(Math.max(64, n * 8));
  }

  /** Room for `bytes` more. */
  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + bytes));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  raw(bytes: Uint8Array): true {
    this.reserve(bytes.byteLength);
    this.buf.set(bytes, this.length);
    this.length += bytes.byteLength;
    return true;
  }

  /** msgpack str (fixstr / str8 / str16 / str32) with its UTF-8 bytes. */
  string(s: string): true {
    const max = s.length * 3; // UTF-8 bytes per UTF-16 unit, at most
    this.reserve(5 + max);
    const b = this.buf;
    let pos = this.length;
    if (s.length < 32) {
      // Short ASCII strings (ids, labels) byte by byte: a native write per item costs more.
      let j = 0;
      for (; j < s.length; j++) {
        const c = s.charCodeAt(j);
        if (c >= 0x80) break;
        b[pos + 1 + j] = c;
      }
      if (j === s.length) {
        b[pos] = 0xa0 | j;
        this.length = pos + 1 + j;
        return true;
      }
    }
    const bytes = max < 32 ? Buffer.byteLength(s) : -1;
    const head = bytes >= 0 && bytes < 32 ? 1 : max < 256 ? 2 : max < 65536 ? 3 : 5;
    const len = b.write(s, pos + head, 'utf8');
    if (head === 1) b[pos] = 0xa0 | len;
    else if (head === 2) (b[pos] = 0xd9), (b[pos + 1] = len);
    else if (head === 3) (b[pos] = 0xda), b.writeUInt16BE(len, pos + 1);
    else (b[pos] = 0xdb), b.writeUInt32BE(len, pos + 1);
    pos += head + len;
    this.length = pos;
    return true;
  }

  /** msgpack int for integers within int32/uint32 (msgpackr's own choice of width); false for other numbers. */
  int(v: number): boolean {
    if (!Number.isInteger(v) || v > 0xffffffff || v < -0x80000000 || Object.is(v, -0)) return false;
    this.reserve(5);
    const b = this.buf;
    const p = this.length;
    if (v >= 0) {
      if (v < 0x80) (b[p] = v), (this.length = p + 1);
      else if (v < 0x100) (b[p] = 0xcc), (b[p + 1] = v), (this.length = p + 2);
      else if (v < 0x10000) (b[p] = 0xcd), b.writeUInt16BE(v, p + 1), (this.length = p + 3);
      else (b[p] = 0xce), b.writeUInt32BE(v, p + 1), (this.length = p + 5);
    } else if (v >= -0x20) (b[p] = v & 0xff), (this.length = p + 1);
    else if (v >= -0x80) (b[p] = 0xd0), b.writeInt8(v, p + 1), (this.length = p + 2);
    else if (v >= -0x8000) (b[p] = 0xd1), b.writeInt16BE(v, p + 1), (this.length = p + 3);
    else (b[p] = 0xd2), b.writeInt32BE(v, p + 1), (this.length = p + 5);
    return true;
  }

  /** The packed bytes: a copy of exactly `length` bytes (the writer's buffer is larger). */
  bytes(): Uint8Array {
    return new Uint8Array(this.buf.buffer, this.buf.byteOffset, this.length).slice();
  }
}

/** Concatenates byte arrays whose lengths add up to `total`. */
export function concatBytes(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.byteLength;
  }
  return out;
}

/** Views a u8 attachment of little-endian u32s as a Uint32Array (attachments are 8-aligned). */
export function offsetsView(bytes: Uint8Array, field = 'metadata offsets'): Uint32Array {
  if (bytes.byteLength % 4 !== 0) throw new ValidationError(field, 'a whole number of u32 values', `${bytes.byteLength} bytes`);
  if (bytes.byteOffset % 4 === 0) return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Uint32Array(bytes.slice().buffer);
}

/** The offsets as raw bytes, for sending as a u8 attachment. */
export function offsetsBytes(offsets: Uint32Array): Uint8Array {
  return new Uint8Array(offsets.buffer, offsets.byteOffset, offsets.byteLength);
}

/**
 * Checks a received batch: n+1 monotone offsets within the blob, and every item a single
 * plain msgpack value. Metadata is decoded by other clients later; garbage must be refused
 * now, naming the bad entry, rather than break their searches.
 */
export function validateMetadata(blob: Uint8Array, offsets: Uint32Array, n: number, field = 'metadata'): void {
  if (offsets.length !== n + 1) throw new ValidationError(field, `${n + 1} offsets for ${n} vectors (metadata length must equal the batch size)`, `${offsets.length} offsets`);
  if (offsets[0] !== 0 || offsets[n] !== blob.byteLength) throw new ValidationError(field, `offsets from 0 to the blob length ${blob.byteLength}`);
  for (let i = 0; i < n; i++) {
    const a = offsets[i]!;
    const b = offsets[i + 1]!;
    if (b <= a) throw new ValidationError(`${field}[${i}]`, 'a non-empty msgpack value (increasing offsets)');
    // The byte scan accepts only what decoding would accept; anything else (extension
    // types, odd map keys, deep nesting, garbage) is decoded, which accepts or names the problem.
    if (scanPlain(blob, a, 0) !== b) decodeMetadataItem(blob.subarray(a, b), `${field}[${i}]`);
  }
}

/** Below MAX_DEPTH (codec.ts), with room: deeper values take the decoding path. */
const SCAN_DEPTH = 32;

/**
 * Walks one msgpack value at `pos` without decoding it; returns the position after it, or
 * -1 when it is not certainly one plain value (nil, booleans, ints, floats, str, bin,
 * arrays, maps with str or int keys). Decoding 500k small items cost ~0.45 µs each.
 */
export function scanPlain(b: Uint8Array, pos: number, depth: number): number {
  const end = b.length;
  if (pos >= end) return -1;
  const t = b[pos]!;
  if (t < 0x80 || t >= 0xe0) return pos + 1; // fixint
  if (t <= 0x8f) return scanMap(b, pos + 1, t & 0x0f, depth);
  if (t <= 0x9f) return scanArray(b, pos + 1, t & 0x0f, depth);
  if (t <= 0xbf) return fits(pos + 1 + (t & 0x1f), end);
  switch (t) {
    case 0xc0:
    case 0xc2:
    case 0xc3:
      return pos + 1;
    case 0xcc:
    case 0xd0:
      return fits(pos + 2, end);
    case 0xcd:
    case 0xd1:
      return fits(pos + 3, end);
    case 0xca:
    case 0xce:
    case 0xd2:
      return fits(pos + 5, end);
    case 0xcb:
    case 0xcf:
    case 0xd3:
      return fits(pos + 9, end);
    case 0xc4:
    case 0xd9:
      return pos + 2 <= end ? fits(pos + 2 + b[pos + 1]!, end) : -1;
    case 0xc5:
    case 0xda:
      return pos + 3 <= end ? fits(pos + 3 + be16(b, pos + 1), end) : -1;
    case 0xc6:
    case 0xdb:
      return pos + 5 <= end ? fits(pos + 5 + be32(b, pos + 1), end) : -1;
    case 0xdc:
      return pos + 3 <= end ? scanArray(b, pos + 3, be16(b, pos + 1), depth) : -1;
    case 0xdd:
      return pos + 5 <= end ? scanArray(b, pos + 5, be32(b, pos + 1), depth) : -1;
    case 0xde:
      return pos + 3 <= end ? scanMap(b, pos + 3, be16(b, pos + 1), depth) : -1;
    case 0xdf:
      return pos + 5 <= end ? scanMap(b, pos + 5, be32(b, pos + 1), depth) : -1;
    default:
      return -1; // 0xc1 (never used) and extension types
  }
}

function scanArray(b: Uint8Array, pos: number, count: number, depth: number): number {
  if (depth + 1 >= SCAN_DEPTH) return -1;
  for (let i = 0; i < count && pos >= 0; i++) pos = scanPlain(b, pos, depth + 1);
  return pos;
}

function scanMap(b: Uint8Array, pos: number, count: number, depth: number): number {
  if (depth + 1 >= SCAN_DEPTH) return -1;
  for (let i = 0; i < count && pos >= 0; i++) {
    if (pos >= b.length) return -1;
    const k = b[pos]!;
    // str or int keys only (msgpackr's object keys); others take the decoding path
    const keyOk = (k >= 0xa0 && k <= 0xbf) || k < 0x80 || k >= 0xe0 || (k >= 0xcc && k <= 0xce) || (k >= 0xd0 && k <= 0xd2) || (k >= 0xd9 && k <= 0xdb);
    if (!keyOk) return -1;
    pos = scanPlain(b, pos, depth + 1);
    if (pos >= 0) pos = scanPlain(b, pos, depth + 1);
  }
  return pos;
}

const fits = (next: number, end: number): number => (next <= end ? next : -1);
const be16 = (b: Uint8Array, p: number): number => (b[p]! << 8) | b[p + 1]!;
const be32 = (b: Uint8Array, p: number): number => ((b[p]! << 24) >>> 0) + (b[p + 1]! << 16) + (b[p + 2]! << 8) + b[p + 3]!;

/**
 * Reads the metadata of single hits from a search reply's blob + offsets (empty entries,
 * for -1 slots, read as null): one Buffer view for the whole reply, and each item decoded in
 * place, instead of a view and a multi-value decode per item.
 */
export function metadataReader(blob: Uint8Array, offsets: Uint32Array, field = 'metadata'): (slot: number) => unknown {
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  return (slot) => {
    const start = offsets[slot]!;
    const end = offsets[slot + 1]!;
    if (end <= start) return null;
    let value: unknown;
    try {
      // Throws when the item holds more (or less) than one value.
      value = unpackr.unpack(buf, { start, end });
    } catch (err) {
      throw new ValidationError(`${field}[${slot}]`, `one msgpack value (${(err as Error).message})`);
    }
    assertPlain(value, `${field}[${slot}]`, BYTES);
    return mayHoldBin(buf, start, end) ? ownBytes(value) : value;
  };
}

/** Decodes one stored metadata item, checked when it was added (server-side filters read every record's: no checks again). */
export function unpackStored(bytes: Uint8Array): unknown {
  return unpackr.unpack(bytes);
}

/** Decodes one packed metadata value (exactly one msgpack value, plain data only). */
export function decodeMetadataItem(bytes: Uint8Array, field = 'metadata'): unknown {
  let values: unknown[];
  try {
    values = unpackr.unpackMultiple(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as unknown[];
  } catch (err) {
    throw new ValidationError(field, `one msgpack value (${(err as Error).message})`);
  }
  if (values.length !== 1) throw new ValidationError(field, 'exactly one msgpack value', `${values.length} values`);
  assertPlain(values[0], field, BYTES);
  return mayHoldBin(bytes, 0, bytes.byteLength) ? ownBytes(values[0]) : values[0];
}

const BYTES = { allowBytes: true };

/** Whether a packed value may contain msgpack bin (markers 0xc4-0xc6): cheap, may say yes wrongly. */
function mayHoldBin(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (bytes[i]! >= 0xc4 && bytes[i]! <= 0xc6) return true;
  return false;
}

/**
 * msgpackr decodes bin as a Buffer viewing the source bytes (a reply's receive buffer, which
 * is reused): each becomes a Uint8Array copy, so it round-trips as the type it was sent as.
 */
function ownBytes(value: unknown): unknown {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    for (const key of Object.keys(obj)) obj[key] = ownBytes(obj[key]);
  }
  return value;
}
