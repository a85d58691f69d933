/**
 * The server's method table: what a handler sees of a request (CallContext), what it
 * returns, and the checks made before it runs (argument schema, attachment dtypes). The
 * table is turned into a Map once: no prototype or dynamic property lookup, so
 * "constructor" or "__proto__" are just unknown methods.
 */
import type { z } from 'zod';
import { ValidationError } from '../errors.js';
import { dtypeOf, type Attachment, type Dtype } from './frame.js';
import { HANDSHAKE_METHODS } from './hello.js';

export interface CallContext {
  readonly method: string;
  readonly requestId: number;
  /**
   * Zero-copy views into the request frame. They stay valid until the reply has been
   * written; after that the receive buffer is reused for later requests. To keep them
   * longer (e.g. vectors buffered for a background add), call retainAttachments().
   */
  readonly attachments: readonly Attachment[];
  /**
   * Takes ownership of the request's receive buffer: it will not be reused after the reply.
   * Call the returned function once the attachments are no longer used (calling it is
   * optional; without it the buffer is simply garbage collected, not recycled).
   */
  retainAttachments(): () => void;
  /** "host:port" of the client. */
  readonly remote: string;
  /** Aborted when the client's connection closes (the reply would go nowhere). */
  readonly signal: AbortSignal;
}

export interface HandlerReply<R = unknown> {
  result?: R;
  /**
   * Written without copying, after the handler returns: do not modify this memory
   * afterwards (allocate per reply rather than reusing a scratch buffer).
   */
  attachments?: readonly Attachment[];
}

/** Expected attachment dtypes in order; a trailing '?' marks an optional one (e.g. ['f32', 'i64?']). */
export type AttachmentRule = readonly (Dtype | `${Dtype}?`)[];

export interface MethodSpec<A = unknown, R = unknown> {
  /** Validates `args`; failures reach the client as ValidationError naming e.g. "args.k". Must be synchronous. */
  readonly schema: z.ZodType<A>;
  /** When given, attachments are checked against it before the handler runs. */
  readonly attachments?: AttachmentRule;
  readonly handler: (args: A, ctx: CallContext) => HandlerReply<R> | void | Promise<HandlerReply<R> | void>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type MethodTable = Readonly<Record<string, MethodSpec<any, any>>>;

/** Identity helper that infers the handler's args type from the schema. */
export function defineMethod<S extends z.ZodType, R = unknown>(spec: {
  schema: S;
  attachments?: AttachmentRule;
  handler: (args: z.output<S>, ctx: CallContext) => HandlerReply<R> | void | Promise<HandlerReply<R> | void>;
}): MethodSpec<z.output<S>, R> {
  return spec as MethodSpec<z.output<S>, R>;
}

/** The table as a Map, each entry checked (handshake names are reserved). */
export function methodMap(table: MethodTable): ReadonlyMap<string, MethodSpec<unknown, unknown>> {
  const methods = new Map<string, MethodSpec<unknown, unknown>>();
  for (const [name, spec] of Object.entries(table)) {
    if (HANDSHAKE_METHODS.includes(name)) throw new RangeError(`method name '${name}' is reserved for the handshake`);
    if (typeof spec?.handler !== 'function' || typeof spec.schema?.safeParse !== 'function') {
      throw new TypeError(`method '${name}' needs {schema: zod schema, handler: function}`);
    }
    methods.set(name, spec as MethodSpec<unknown, unknown>);
  }
  return methods;
}

/** Checks a request's attachments against its method's rule (count and dtypes). */
export function checkAttachments(rule: AttachmentRule, got: readonly Attachment[]): void {
  const required = rule.filter((r) => !r.endsWith('?')).length;
  if (got.length < required || got.length > rule.length) {
    throw new ValidationError('attachments', `${required === rule.length ? '' : `${required} to `}${rule.length} attachments (${rule.join(', ')})`, got.length);
  }
  for (let i = 0; i < got.length; i++) {
    const want = (rule[i] as string).replace('?', '');
    const have = dtypeOf(got[i]);
    if (have !== want) throw new ValidationError(`attachments[${i}]`, `dtype ${want}`, got[i]);
  }
}
