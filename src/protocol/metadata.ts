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
  const parts: Uint8Array[] = [];
  const offsets = new Uint32Array(n + 1);
  let total = 0;
  for (let i = 0; i < n; i++) {
    let bytes: Uint8Array = NIL_METADATA;
    if (values !== undefined && values[i] !== undefined && values[i] !== null) {
      assertPlain(values[i], `${field}[${i}]`, BYTES);
      try {
        bytes = packr.pack(values[i]);
      } catch (err) {
        throw new ValidationError(`${field}[${i}]`, `msgpack-serialisable plain data (${(err as Error).message})`);
      }
    }
    parts.push(bytes);
    total += bytes.length;
    if (total > 0xffffffff) throw new ValidationError(field, 'at most 4 GiB of packed metadata per batch');
    offsets[i + 1] = total;
  }
  return { blob: concatBytes(parts, total), offsets };
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
    decodeMetadataItem(blob.subarray(a, b), `${field}[${i}]`);
  }
}

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
