/**
 * In-process shards for fast client tests: real IndexServers (real FAISS, real folders)
 * behind LocalShards, no processes and no sockets. FlakyShard wraps one to make it fail as
 * a server does: down (nothing sent), failing while holding a request, or answering an error.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConnectionError, ServerUnavailableError } from '../../src/errors.js';
import type { ArgsOf, MethodName } from '../../src/contract.js';
import type { Attachment, CallOptions } from '../../src/protocol/index.js';
import type { ConnKind, Reply, ShardOperation } from '../../src/shard-operation.js';
import { IndexServer } from '../../src/server/index-server.js';

export class FlakyShard implements ShardOperation {
  /** Down: every call fails at once, nothing reaches the shard. */
  down = false;
  /** Methods that fail after the shard ran them (the reply is lost, as when a server dies holding a request). */
  readonly failAfter = new Set<MethodName>();
  /** Methods that answer with this error (as a server's own error would arrive). */
  readonly answer = new Map<MethodName, Error>();
  /** Calls that reached the inner shard, per method. */
  readonly calls = new Map<string, number>();
  onStateChange: ((up: boolean, error?: Error) => void) | null = null;

  constructor(readonly inner: ShardOperation) {}

  get address() {
    return this.inner.address;
  }
  get name(): string {
    return this.inner.name;
  }
  get rank(): number | undefined {
    return this.inner.rank;
  }
  get maxFrameBytes(): number | undefined {
    return this.inner.maxFrameBytes;
  }

  async call<M extends MethodName>(kind: ConnKind, method: M, args: ArgsOf<M>, attachments?: readonly Attachment[], opts?: CallOptions): Promise<Reply<M>> {
    if (this.down) throw new ServerUnavailableError(this.name, `server ${this.name} is down (test)`);
    const err = this.answer.get(method);
    if (err) throw err;
    this.calls.set(method, (this.calls.get(method) ?? 0) + 1);
    const reply = await this.inner.call(kind, method, args, attachments, opts);
    if (this.failAfter.has(method)) throw new ConnectionError(`connection to ${this.name} lost after '${method}' (test)`);
    return reply;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export interface LocalShards {
  dir: string;
  shards: FlakyShard[];
  /** Closes every shard and removes the folder. */
  close(): Promise<void>;
}

/** `n` in-process servers (ranks 0..n-1) over one temp storage root, each behind a FlakyShard. */
export function localShards(n: number): LocalShards {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-local-'));
  const shards = Array.from({ length: n }, (_, rank) => new FlakyShard(IndexServer.inProcess(rank, join(dir, 'data'), { trainThreads: 1 })));
  return {
    dir,
    shards,
    async close() {
      await Promise.allSettled(shards.map((s) => s.close()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
