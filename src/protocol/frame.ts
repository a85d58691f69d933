/**
 * Frame byte layout (docs/protocol.md has the full description):
 *
 *   0  u8[4]  magic "DFAI"
 *   4  u32    frame length in bytes, this header included; a multiple of 8
 *   8  u32    envelope length in bytes
 *   12 u32    reserved, 0
 *   16        msgpack envelope, then zero padding to a multiple of 8
 *   ...       attachments, each starting 8-aligned and zero-padded to a multiple of 8
 *
 * All integers and attachment elements are little-endian. Because every frame and every
 * attachment starts 8-aligned relative to the frame start, a receiver that places the
 * frame at an 8-aligned address can view Float32Array / BigInt64Array data in place.
 */
import { endianness } from 'node:os';
import { ProtocolError, ValidationError, describe } from '../errors.js';
import { packEnvelope, unpackEnvelope, type AttachmentDescriptor, type Envelope } from './codec.js';

export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 16;
export const FRAME_ALIGN = 8;
/** "DFAI" as bytes 0x44 0x46 0x41 0x49, read as a little-endian u32. */
export const FRAME_MAGIC = 0x49414644;
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024;
/** The length field is a u32 and frames are multiples of 8. */
export const MAX_FRAME_BYTES_LIMIT = 0xfffffff8;

/** Typed arrays that can travel as attachments. Uint16Array always means IEEE fp16 bit patterns. */
export type Attachment = Float32Array | BigInt64Array | Uint16Array | Uint8Array;
export type Dtype = 'f32' | 'i64' | 'f16' | 'u8';

interface DtypeInfo {
  readonly bytes: number;
  view(buffer: ArrayBufferLike, byteOffset: number, length: number): Attachment;
}

// A Map, not an object literal: a peer-supplied dtype like "constructor" must not resolve.
const DTYPES: ReadonlyMap<string, DtypeInfo> = new Map<string, DtypeInfo>([
  ['f32', { bytes: 4, view: (b, o, n) => new Float32Array(b, o, n) }],
  ['i64', { bytes: 8, view: (b, o, n) => new BigInt64Array(b, o, n) }],
  ['f16', { bytes: 2, view: (b, o, n) => new Uint16Array(b, o, n) }],
  ['u8', { bytes: 1, view: (b, o, n) => new Uint8Array(b, o, n) }],
]);

export function dtypeOf(a: unknown): Dtype | undefined {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof BigInt64Array) return 'i64';
  if (a instanceof Uint16Array) return 'f16';
  if (a instanceof Uint8Array) return 'u8';
  return undefined;
}

// Typed arrays use host byte order; the wire is little-endian. Every platform Node + FAISS
// run on is little-endian, so big-endian hosts are refused instead of byte-swapped.
const HOST_IS_LE = endianness() === 'LE';

/** Rounds up to a multiple of 8 (arithmetic, not bit ops: sizes can exceed 2^31). */
export const align8 = (n: number): number => Math.ceil(n / FRAME_ALIGN) * FRAME_ALIGN;

const ZERO_PAD = new Uint8Array(FRAME_ALIGN);
/** Below this total size a frame is assembled into one buffer (one write, no iovec overhead). */
const INLINE_FRAME_BYTES = 64 * 1024;

export interface EncodedFrame {
  /** Parts to write in order; large attachments are views of the caller's memory, not copies. */
  readonly parts: Uint8Array[];
  readonly byteLength: number;
}

/**
 * Encodes one frame. Large attachments are referenced, not copied: the caller must not
 * modify them until the frame has been written.
 * Throws ValidationError for unsupported attachments or non-plain args/results.
 */
export function encodeFrame(envelope: Envelope, attachments: readonly Attachment[] = []): EncodedFrame {
  const att: AttachmentDescriptor[] = [];
  let attBytes = 0;
  for (let i = 0; i < attachments.length; i++) {
    const a = attachments[i];
    const dtype = dtypeOf(a);
    if (dtype === undefined || a === undefined) {
      throw new ValidationError(`attachments[${i}]`, 'Float32Array, BigInt64Array, Uint16Array (fp16) or Uint8Array', a);
    }
    if (!HOST_IS_LE && dtype !== 'u8') throw new ProtocolError('typed-array attachments need a little-endian host');
    att.push([dtype, a.byteLength]);
    attBytes += align8(a.byteLength);
  }
  const env = packEnvelope(envelope, att);
  const headBytes = align8(HEADER_BYTES + env.byteLength);
  const total = headBytes + attBytes;
  if (total > MAX_FRAME_BYTES_LIMIT) {
    throw new ValidationError('frame size', `at most ${MAX_FRAME_BYTES_LIMIT} bytes per frame; split the data`, total);
  }
  const inline = total <= INLINE_FRAME_BYTES;
  // allocUnsafe is fine: every byte, padding included, is written below (no stale memory leaks out).
  const head = Buffer.allocUnsafe(inline ? total : headBytes);
  head.writeUInt32LE(FRAME_MAGIC, 0);
  head.writeUInt32LE(total, 4);
  head.writeUInt32LE(env.byteLength, 8);
  head.writeUInt32LE(0, 12);
  head.set(env, HEADER_BYTES);
  head.fill(0, HEADER_BYTES + env.byteLength, headBytes);
  const parts: Uint8Array[] = [head];
  let offset = headBytes;
  for (const a of attachments) {
    const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const pad = align8(a.byteLength) - a.byteLength;
    if (inline) {
      head.set(bytes, offset);
      head.fill(0, offset + a.byteLength, offset + a.byteLength + pad);
    } else {
      if (bytes.byteLength > 0) parts.push(bytes);
      if (pad > 0) parts.push(ZERO_PAD.subarray(0, pad));
    }
    offset += a.byteLength + pad;
  }
  return { parts, byteLength: total };
}

export interface FrameHeader {
  frameBytes: number;
  envelopeBytes: number;
}

/**
 * Validates the 16-byte header at `bytes[offset..]`. `maxFrameBytes` is checked here, before
 * the receiver allocates anything for the frame body.
 */
export function parseHeader(bytes: Uint8Array, offset: number, maxFrameBytes: number): FrameHeader {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_BYTES);
  const magic = dv.getUint32(0, true);
  if (magic !== FRAME_MAGIC) {
    // 0x16 0x03: a TLS handshake record (0x15 0x03: a TLS alert).
    const tls = (bytes[offset] === 0x16 || bytes[offset] === 0x15) && bytes[offset + 1] === 0x03;
    throw new ProtocolError(
      `bad frame magic 0x${magic.toString(16).padStart(8, '0')} (expected "DFAI"): ${
        tls
          ? 'the peer speaks TLS but this side does not (use TLS on both sides: --tls-cert/--tls-key on the server, tls options on the client)'
          : 'the peer does not speak the dfaiss protocol or the stream is corrupt'
      }`,
    );
  }
  const frameBytes = dv.getUint32(4, true);
  const envelopeBytes = dv.getUint32(8, true);
  const reserved = dv.getUint32(12, true);
  if (frameBytes > maxFrameBytes) {
    throw new ProtocolError(`frame of ${frameBytes} bytes exceeds the limit of ${maxFrameBytes} bytes (maxFrameBytes); send smaller batches`);
  }
  if (frameBytes < HEADER_BYTES || frameBytes % FRAME_ALIGN !== 0) {
    throw new ProtocolError(`bad frame length ${frameBytes}: must be at least ${HEADER_BYTES} and a multiple of ${FRAME_ALIGN}`);
  }
  if (envelopeBytes === 0 || HEADER_BYTES + envelopeBytes > frameBytes) {
    throw new ProtocolError(`bad envelope length ${envelopeBytes} for a frame of ${frameBytes} bytes`);
  }
  if (reserved !== 0) throw new ProtocolError(`reserved frame header field is ${reserved}, must be 0`);
  return { frameBytes, envelopeBytes };
}

export interface DecodedFrame {
  envelope: Envelope;
  /** Views into the frame bytes (zero-copy), valid as long as those bytes are. */
  attachments: Attachment[];
}

/**
 * Decodes one complete frame. Attachments are views over `frame`'s memory when it is
 * 8-aligned (the FrameAssembler guarantees that); a misaligned frame is copied once.
 * Throws ProtocolError on any inconsistency.
 */
export function decodeFrame(frame: Uint8Array, maxFrameBytes = MAX_FRAME_BYTES_LIMIT): DecodedFrame {
  if (frame.byteLength < HEADER_BYTES) throw new ProtocolError(`truncated frame: ${frame.byteLength} bytes, the header alone is ${HEADER_BYTES}`);
  const { frameBytes, envelopeBytes } = parseHeader(frame, 0, maxFrameBytes);
  if (frameBytes !== frame.byteLength) {
    throw new ProtocolError(`frame length field says ${frameBytes} bytes but ${frame.byteLength} were given`);
  }
  // Uint8Array's slice copies (Buffer's would return a view with the same misalignment).
  if (frame.byteOffset % FRAME_ALIGN !== 0) frame = Uint8Array.prototype.slice.call(frame);
  const { envelope, att } = unpackEnvelope(frame.subarray(HEADER_BYTES, HEADER_BYTES + envelopeBytes));
  const attachments: Attachment[] = [];
  let offset = align8(HEADER_BYTES + envelopeBytes);
  for (let i = 0; i < att.length; i++) {
    const [dtype, byteLength] = att[i] as AttachmentDescriptor;
    const info = DTYPES.get(dtype);
    if (info === undefined) throw new ProtocolError(`attachment ${i} has unknown dtype ${describe(dtype)} (known: ${[...DTYPES.keys()].join(', ')})`);
    if (byteLength % info.bytes !== 0) {
      throw new ProtocolError(`attachment ${i} (${dtype}) has ${byteLength} bytes, not a multiple of its ${info.bytes}-byte element`);
    }
    if (offset + byteLength > frameBytes) {
      throw new ProtocolError(`attachment ${i} (${byteLength} bytes at offset ${offset}) runs past the end of the ${frameBytes}-byte frame`);
    }
    if (!HOST_IS_LE && dtype !== 'u8') throw new ProtocolError('typed-array attachments need a little-endian host');
    attachments.push(info.view(frame.buffer, frame.byteOffset + offset, byteLength / info.bytes));
    offset += align8(byteLength);
  }
  if (offset !== frameBytes) {
    throw new ProtocolError(`frame length ${frameBytes} does not match its contents (${offset} bytes of header, envelope and attachments)`);
  }
  return { envelope, attachments };
}
