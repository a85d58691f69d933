/**
 * The server side of the RPC contract: `implement(name, handler)` takes a method's schema
 * and attachment rule from CONTRACT and types its handler's arguments and result by it.
 */
import { CONTRACT, type Contract, type MethodName, type ParsedArgsOf, type ResultOf } from '../contract.js';
import type { CallContext, HandlerReply, MethodSpec } from '../protocol/index.js';

type Handler<M extends MethodName> = (args: ParsedArgsOf<M>, ctx: CallContext) => HandlerReply<ResultOf<M>> | void | Promise<HandlerReply<ResultOf<M>> | void>;

/** A method of the contract, implemented: its schema and attachment rule come from CONTRACT. */
export function implement<M extends MethodName>(name: M, handler: Handler<M>): MethodSpec<ParsedArgsOf<M>, ResultOf<M>> {
  const spec: Contract[M] = CONTRACT[name];
  return { schema: spec.args as unknown as MethodSpec<ParsedArgsOf<M>>['schema'], ...('attachmentsIn' in spec ? { attachments: spec.attachmentsIn } : {}), handler };
}

/** Every method of the contract (the mapped type makes a missing one a compile error). */
export type ServerMethods = { [M in MethodName]: MethodSpec<ParsedArgsOf<M>, ResultOf<M>> };
