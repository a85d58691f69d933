/**
 * The hello exchange: the first request on every connection. Shared by client and server so
 * both validate the same shapes.
 */
import { z } from 'zod';

export const HELLO_METHOD = 'hello';

/** Sent by the client. Unknown fields are ignored so later versions can add some. */
export const helloArgsSchema = z.object({
  /** The client's protocol version. */
  version: z.number().int().nonnegative(),
  /** Placeholder for authentication; servers currently ignore it. */
  token: z.string().max(4096).optional(),
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
});
export type ServerInfo = z.infer<typeof helloResultSchema>;
