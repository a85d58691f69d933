/**
 * CRC-32 (zlib's polynomial) over a sequence of byte arrays. Empty arrays are skipped:
 * node:zlib's crc32 returns 0 instead of the running value for an empty view of an empty
 * ArrayBuffer (seen on Node 20.20), which would silently corrupt checksums of records
 * with an empty part.
 */
import { crc32 } from 'node:zlib';

export function crc32Update(crc: number, bytes: Uint8Array): number {
  return bytes.byteLength === 0 ? crc : crc32(bytes, crc);
}
