/**
 * The hello exchange: the first request on every connection, followed by `auth` when the
 * server requires a shared secret (docs/protocol.md, section 6). Shared by client and server
 * so both validate the same shapes.
 */
import { z } from 'zod';
import { AUTH_METHOD, HEX32_PATTERN } from './auth.js';

export const HELLO_METHOD = 'hello';
export { AUTH_METHOD };
/** Method names the handshake uses; a method table may not define them. */
export const HANDSHAKE_METHODS: readonly string[] = [HELLO_METHOD, AUTH_METHOD];

const hex32 = z.string().regex(HEX32_PATTERN, '64 lowercase hex digits');

/** Sent by the client. Unknown fields are ignored so later versions can add some. */
export const helloArgsSchema = z.object({
  /** The client's protocol version. */
  version: z.number().int().nonnegative(),
  /** Fresh random client nonce (32 bytes as hex); sent when the client has a shared secret. */
  nonce: hex32.optional(),
  /** Largest frame the client accepts; servers keep replies within it. */
  maxFrameBytes: z.number().int().positive().optional(),
  /** Free-form client description for server logs. */
  client: z.string().max(256).optional(),
});
export type HelloArgs = z.infer<typeof helloArgsSchema>;

/** Returned by the server. */
export const helloResultSchema = z.object({
  version: z.number().int().nonnegative(),
  rank: z.number().int(),
  capabilities: z.array(z.string()),
  maxFrameBytes: z.number().int().positive(),
  /** The server's FAISS build (version, SIMD level, BLAS); absent from servers before it was added. */
  faiss: z.object({ version: z.string(), simd: z.string(), blas: z.string() }).optional(),
  /** Present when the server requires authentication: the challenge. */
  auth: z.object({ scheme: z.string(), nonce: hex32 }).optional(),
});
export type ServerInfo = z.infer<typeof helloResultSchema>;

/** Second handshake request, when the hello reply carried `auth`. */
export const authArgsSchema = z.object({ proof: hex32 });
/** The server's answer: its own proof. */
export const authResultSchema = z.object({ proof: hex32 });
