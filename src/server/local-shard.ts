/**
 * LocalShard: one server's shards in this process, behind the same shard interface as a
 * RemoteShard. Its operations are the contract's methods as the server implements them
 * (methods.ts); every IndexServer has one, and its RPC server serves exactly that table, so
 * a call here runs the code a remote call runs, minus the wire. What the wire would do is kept: arguments are checked
 * against the contract's schemas, attachments are copied in and out (the caller's arrays
 * are never kept), and errors arrive as they would from a server (errors-wire.ts).
 * IndexServer.inProcess gives one without a listening server (tests that run IndexClient's
 * logic without server processes).
 */
import type { ArgsOf, MethodName } from '../contract.js';
import type { ServerAddress } from '../discovery/discovery-file.js';
import { ConnectionError, TimeoutError } from '../errors.js';
import type { Attachment, CallContext, CallOptions } from '../protocol/index.js';
import { errorFromWire, errorToWire } from '../protocol/errors-wire.js';
import { checkAttachments } from '../protocol/rpc-methods.js';
import { parseWith } from '../protocol/validate.js';
import type { ConnKind, Reply, ShardOperation } from '../shard-operation.js';
import type { ServerMethods } from './implement.js';
import type { IndexServer } from './index-server.js';
import { buildMethods } from './methods.js';

export class LocalShard implements ShardOperation {
  /** The contract's operations on this server's shards (the RPC server serves this table). */
  readonly operations: ServerMethods;
  readonly address: ServerAddress;
  readonly name: string;
  readonly maxFrameBytes = undefined;
  onStateChange: ((up: boolean, error?: Error) => void) | null = null;
  private readonly abort = new AbortController();
  private requestId = 0;
  private closed = false;

  constructor(readonly server: IndexServer) {
    this.operations = buildMethods(server);
    this.address = { host: 'in-process', port: server.rank };
    this.name = `in-process:${server.rank}`;
  }

  get rank(): number {
    return this.server.rank;
  }

  async call<M extends MethodName>(_kind: ConnKind, method: M, args: ArgsOf<M>, attachments: readonly Attachment[] = [], opts: CallOptions = {}): Promise<Reply<M>> {
    if (this.closed) throw new ConnectionError(`${this.name} was closed by this client`);
    opts.signal?.throwIfAborted();
    const work = this.run(method, args, attachments.map(copy));
    const { timeoutMs = 0, signal } = opts;
    if (timeoutMs <= 0 && !signal) return work;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      return await Promise.race([
        work,
        new Promise<never>((_, reject) => {
          if (timeoutMs > 0) timer = setTimeout(() => reject(new TimeoutError(`call '${method}' to ${this.name} timed out after ${timeoutMs} ms`)), timeoutMs);
          onAbort = () => reject(signal!.reason);
          signal?.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  private async run<M extends MethodName>(method: M, args: ArgsOf<M>, attachments: Attachment[]): Promise<Reply<M>> {
    const spec = this.operations[method];
    try {
      const parsed = parseWith(spec.schema, args, 'args');
      if (spec.attachments) checkAttachments(spec.attachments, attachments);
      const ctx: CallContext = {
        method,
        requestId: ++this.requestId,
        attachments,
        remote: 'in-process',
        signal: this.abort.signal,
        retainAttachments: () => () => {}, // copies: nothing to give back
      };
      const out = await (spec.handler as (a: unknown, c: CallContext) => Promise<{ result?: unknown; attachments?: readonly Attachment[] } | void>)(parsed, ctx);
      return { result: out?.result, attachments: (out?.attachments ?? []).map(copy), release: () => {} } as unknown as Reply<M>;
    } catch (err) {
      throw errorFromWire(errorToWire(err)); // as a remote caller gets it
    }
  }

  /** Stops the in-process server's shards (they save as on a graceful shutdown). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort(new ConnectionError(`${this.name} was closed`));
    await this.server.stop();
  }
}

function copy(a: Attachment): Attachment {
  return a.slice() as Attachment;
}
