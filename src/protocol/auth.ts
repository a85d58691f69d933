/**
 * Shared-secret authentication for the hello exchange (docs/protocol.md, section 6):
 * challenge-response with HMAC-SHA256, mutual, so the secret itself never crosses the wire,
 * even on plain TCP, and a client detects a server that does not know the secret.
 *
 *   client proof = HMAC-SHA256(secret, "dfaiss-auth-v1 client" 0x00 | serverNonce | clientNonce | u32le(version))
 *   server proof = HMAC-SHA256(secret, "dfaiss-auth-v1 server" 0x00 | clientNonce | serverNonce | u32le(version))
 *
 * The labels keep the two proofs apart: without them a fake server could choose its nonce
 * equal to the client's and reflect the client's own proof back as its answer.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { ValidationError } from '../errors.js';

export const AUTH_METHOD = 'auth';
/** Only scheme of protocol version 1; announced in the hello reply's `auth.scheme`. */
export const AUTH_SCHEME = 'hmac-sha256';
export const NONCE_BYTES = 32;
/** Shorter secrets could be guessed offline from one recorded handshake. */
export const MIN_SECRET_BYTES = 16;
/** 64 lowercase hex digits: a nonce or a proof on the wire (envelopes carry no `bin`). */
export const HEX32_PATTERN = /^[0-9a-f]{64}$/;

const CLIENT_LABEL = Buffer.from('dfaiss-auth-v1 client\0', 'latin1');
const SERVER_LABEL = Buffer.from('dfaiss-auth-v1 server\0', 'latin1');

/** A shared secret as given by the user: text (UTF-8) or raw bytes. */
export type Secret = string | Uint8Array;

/** Validates a secret and returns its bytes (a private copy). */
export function secretBytes(secret: Secret, field = 'secret'): Buffer {
  if (typeof secret !== 'string' && !(secret instanceof Uint8Array)) {
    throw new ValidationError(field, 'a string or Uint8Array', secret);
  }
  const bytes = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : Buffer.from(secret);
  if (bytes.byteLength < MIN_SECRET_BYTES) {
    throw new ValidationError(
      field,
      `at least ${MIN_SECRET_BYTES} bytes of random data (create one with: openssl rand -hex 32 > secret && chmod 600 secret)`,
      `${bytes.byteLength} bytes`,
    );
  }
  return bytes;
}

/**
 * Reads a secret file: its contents with trailing CR/LF removed (so `echo s > f` works).
 * `onInsecure` is called when group or others may read the file.
 */
export function readSecretFile(path: string, onInsecure?: (message: string) => void): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (err) {
    throw new ValidationError('secret file', `a readable file holding the shared secret (${(err as Error).message})`, path);
  }
  if (onInsecure) {
    try {
      const mode = statSync(path).mode & 0o777;
      if (mode & 0o077) {
        onInsecure(`secret file ${path} has mode ${mode.toString(8).padStart(3, '0')}: other users may read it; run chmod 600 ${path}`);
      }
    } catch {
      // it was just readable; a stat failure is not worth failing over
    }
  }
  let end = raw.byteLength;
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
  return secretBytes(raw.subarray(0, end), `secret file ${path}`);
}

export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('hex');
}

function versionBytes(version: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(version, 0);
  return b;
}

function proof(label: Buffer, secret: Uint8Array, first: string, second: string, version: number): string {
  return createHmac('sha256', secret)
    .update(label)
    .update(Buffer.from(first, 'hex'))
    .update(Buffer.from(second, 'hex'))
    .update(versionBytes(version))
    .digest('hex');
}

/** What the client sends in `auth`: proves it knows the secret for this server nonce. */
export function clientProof(secret: Uint8Array, serverNonce: string, clientNonce: string, version: number): string {
  return proof(CLIENT_LABEL, secret, serverNonce, clientNonce, version);
}

/** What the server answers: proves it knows the secret for this client nonce. */
export function serverProof(secret: Uint8Array, clientNonce: string, serverNonce: string, version: number): string {
  return proof(SERVER_LABEL, secret, clientNonce, serverNonce, version);
}

/** Constant-time comparison of two hex digests (false for malformed input). */
export function proofsEqual(expected: string, received: unknown): boolean {
  if (typeof received !== 'string' || !HEX32_PATTERN.test(received)) return false;
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(received, 'hex'));
}
