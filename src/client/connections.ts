/**
 * The client's servers: opening a link to each (all or none), calls to all of them, the
 * first live answer, every shard's info, and the closed flag every operation checks.
 */
import { ConnectionError, ValidationError } from '../errors.js';
import type { RpcClientOptions } from '../protocol/index.js';
import type { ServerAddress } from '../discovery/discovery-file.js';
import type { ArgsOf, MethodName, ResultOf, ShardInfoReply } from '../contract.js';
import { ServerConn } from './server-conn.js';
import type { ConnKind, ShardOperation } from '../shard-operation.js';
import type { CallControl } from './call-control.js';
import { shardInfos } from './training.js';

export class Connections {
  private closed = false;

  constructor(readonly servers: readonly ShardOperation[]) {}

  /** Opens every server's link; when one fails, closes the others and throws its error. */
  static async open(addresses: readonly ServerAddress[], rpcOpts: RpcClientOptions, reconnectIntervalMs: number): Promise<Connections> {
    if (addresses.length === 0) throw new ValidationError('servers', 'at least one server address');
    const settled = await Promise.allSettled(addresses.map((address) => ServerConn.open(address, rpcOpts, reconnectIntervalMs)));
    const failed = settled.find((s) => s.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) {
      await Promise.allSettled(settled.map((s) => (s.status === 'fulfilled' ? s.value.close() : undefined)));
      throw failed.reason;
    }
    return new Connections(settled.map((s) => (s as PromiseFulfilledResult<ServerConn>).value));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  checkOpen(): void {
    if (this.closed) throw new ConnectionError('this IndexClient was closed; connect a new one');
  }

  /** The same call on every server; fails when any fails. */
  async all<M extends MethodName>(conn: ConnKind, method: M, args: ArgsOf<M>, opts: CallControl = {}): Promise<Array<ResultOf<M>>> {
    this.checkOpen();
    const results = await Promise.all(this.servers.map((s) => s.call<M>(conn, method, args, [], opts)));
    return results.map((r) => r.result);
  }

  /** The first live server's answer (for facts every server knows, like an index's dim). */
  async firstAnswer<M extends MethodName>(method: M, args: ArgsOf<M>, control: CallControl = {}): Promise<ResultOf<M>> {
    let last: unknown;
    for (const s of this.servers) {
      try {
        return (await s.call<M>('query', method, args, [], control)).result;
      } catch (err) {
        if (!(err instanceof ConnectionError)) throw err;
        last = err;
      }
    }
    throw last;
  }

  /** Every server's info for the index; null for servers that are down. */
  async infos(indexId: string, control: CallControl = {}): Promise<Array<ShardInfoReply | null>> {
    this.checkOpen();
    return shardInfos(this.servers, indexId, control);
  }

  /** Marks the client closed: later calls fail at once. */
  markClosed(): boolean {
    if (this.closed) return false;
    this.closed = true;
    return true;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.servers.map((s) => s.close()));
  }
}
