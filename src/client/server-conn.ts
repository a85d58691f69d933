/**
 * The client's link to one server: two RPC connections (bulk traffic, and searches plus
 * small calls), re-established when the server comes back. While a server is down, calls
 * fail at once with ServerUnavailableError (nothing was sent), and a reconnect is tried at
 * most once per reconnect interval, so a dead server costs no time-outs.
 */
import { ConnectionError, ServerUnavailableError } from '../errors.js';
import { RpcClient, type Attachment, type CallOptions, type RpcClientOptions } from '../protocol/index.js';
import type { ArgsOf, MethodName, ResultOf } from '../contract.js';
import type { ServerAddress } from '../discovery/discovery-file.js';
import type { ConnKind, Reply, ShardOperation } from '../shard-operation.js';

export type { ConnKind, Reply } from '../shard-operation.js';

/** The RemoteShard: a server's shards, reached over its two connections. */
export class ServerConn implements ShardOperation {
  readonly address: ServerAddress;
  /** "host:port", used in every error about this server. */
  readonly name: string;
  private readonly opts: RpcClientOptions;
  private readonly reconnectIntervalMs: number;
  private clients: Record<ConnKind, RpcClient | null>;
  private reconnecting: Promise<void> | null = null;
  private lastAttempt = 0;
  private lastError: Error | null = null;
  private closed = false;

  private constructor(address: ServerAddress, opts: RpcClientOptions, reconnectIntervalMs: number, bulk: RpcClient, query: RpcClient) {
    this.address = address;
    this.name = `${address.host}:${address.port}`;
    this.opts = opts;
    this.reconnectIntervalMs = reconnectIntervalMs;
    this.clients = { bulk, query };
  }

  static async open(address: ServerAddress, opts: RpcClientOptions, reconnectIntervalMs: number): Promise<ServerConn> {
    const [bulk, query] = await connectPair(address, opts);
    return new ServerConn(address, opts, reconnectIntervalMs, bulk, query);
  }

  /** The server's rank from its hello. */
  get rank(): number | undefined {
    return this.clients.query?.server.rank;
  }

  /** The largest frame the server accepts, from its hello. */
  get maxFrameBytes(): number | undefined {
    return this.clients.bulk?.server.maxFrameBytes;
  }

  /** Calls a method of the contract on this server; args, result and reply attachments are typed by it. */
  async call<M extends MethodName>(kind: ConnKind, method: M, args: ArgsOf<M>, attachments: readonly Attachment[] = [], opts: CallOptions = {}): Promise<Reply<M>> {
    const client = await this.client(kind);
    const r = await client.call<ResultOf<M>>(method, args, attachments, opts);
    // The server implements the same contract (server/methods.ts): its reply has these shapes.
    return r as unknown as Reply<M>;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([this.clients.bulk?.close(), this.clients.query?.close()]);
  }

  private async client(kind: ConnKind): Promise<RpcClient> {
    const c = this.clients[kind];
    if (c && !c.closed) return c;
    if (this.closed) throw new ConnectionError(`connection to ${this.name} was closed by this client`);
    if (!this.reconnecting) {
      const since = Date.now() - this.lastAttempt;
      if (since < this.reconnectIntervalMs && this.lastError) {
        throw new ServerUnavailableError(this.name, `server ${this.name} is down (${this.lastError.message}); retrying the connection every ${this.reconnectIntervalMs} ms`);
      }
      this.lastAttempt = Date.now();
      this.reconnecting = this.reconnect().finally(() => {
        this.reconnecting = null;
      });
    }
    await this.reconnecting;
    const again = this.clients[kind];
    if (!again || again.closed) throw new ServerUnavailableError(this.name, `server ${this.name} closed the connection again right after reconnecting`);
    return again;
  }

  /** Called when this server is found down (a reconnect failed) and when it is reachable again. */
  onStateChange: ((up: boolean, error?: Error) => void) | null = null;
  private down = false;

  private async reconnect(): Promise<void> {
    await Promise.allSettled([this.clients.bulk?.close(), this.clients.query?.close()]);
    try {
      const [bulk, query] = await connectPair(this.address, this.opts);
      this.clients = { bulk, query };
      this.lastError = null;
      if (this.down) {
        this.down = false;
        this.onStateChange?.(true);
      }
    } catch (err) {
      this.lastError = err as Error;
      if (!this.down && !this.closed) {
        this.down = true;
        this.onStateChange?.(false, err as Error);
      }
      throw new ServerUnavailableError(this.name, `server ${this.name} is down: ${(err as Error).message}`, { cause: err });
    }
  }
}

async function connectPair(address: ServerAddress, opts: RpcClientOptions): Promise<[RpcClient, RpcClient]> {
  const settled = await Promise.allSettled([RpcClient.connect(address.host, address.port, opts), RpcClient.connect(address.host, address.port, opts)]);
  if (settled[0].status === 'fulfilled' && settled[1].status === 'fulfilled') return [settled[0].value, settled[1].value];
  await Promise.allSettled(settled.map((s) => (s.status === 'fulfilled' ? s.value.close() : undefined)));
  throw (settled.find((s) => s.status === 'rejected') as PromiseRejectedResult).reason;
}

/** A server's shards over the wire (the name the shard interface gives ServerConn). */
export { ServerConn as RemoteShard };
