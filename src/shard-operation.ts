/**
 * One shard interface (as Qdrant's ShardOperation): every operation of the RPC contract on
 * one server's shards, typed by the contract. The client works against it only; two kinds
 * implement it: RemoteShard (client/server-conn.ts: a server over its two connections) and
 * LocalShard (server/local-shard.ts: a server's shards in this process, the same code the
 * RPC server runs). Pure types: no native code, no transport.
 */
import type { ArgsOf, AttachmentsOutOf, MethodName, ResultOf } from './contract.js';
import type { ServerAddress } from './discovery/discovery-file.js';
import type { Attachment, CallOptions, CallResult } from './protocol/index.js';

/** A reply as the contract declares it. */
export interface Reply<M extends MethodName> extends Omit<CallResult<ResultOf<M>>, 'attachments'> {
  attachments: AttachmentsOutOf<M>;
}

/** Which connection a call takes: bulk traffic (adds, training, saves) or searches and small calls. */
export type ConnKind = 'bulk' | 'query';

export interface ShardOperation {
  readonly address: ServerAddress;
  /** Used in every error about this shard ("host:port" for a remote one). */
  readonly name: string;
  /** The server's rank (undefined until it is known). */
  readonly rank: number | undefined;
  /** The largest frame the server accepts (undefined: no limit known). */
  readonly maxFrameBytes: number | undefined;
  /**
   * Calls a method of the contract; args, result and reply attachments are typed by it.
   * Fails with ConnectionError (ServerUnavailableError: nothing was sent) when the shard
   * cannot be reached, TimeoutError after opts.timeoutMs, the signal's reason when aborted,
   * and the server's own error class otherwise.
   */
  call<M extends MethodName>(kind: ConnKind, method: M, args: ArgsOf<M>, attachments?: readonly Attachment[], opts?: CallOptions): Promise<Reply<M>>;
  /** Told when the shard is found down (a reconnect failed) and when it is reachable again. */
  onStateChange: ((up: boolean, error?: Error) => void) | null;
  close(): Promise<void>;
}
