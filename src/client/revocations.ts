/**
 * Batch revocations, so that a batch moved away from a failed server is counted once.
 *
 * When server F fails while holding a batch (it died, or the call timed out), the client
 * stores the batch on another server S under a fresh key and F must revoke the first key:
 * tombstone its copy if it stored one, refuse it if it arrives later. That duty is never
 * held only by the client: the add to S carries `movedFrom: [[rank of F, key]]`, which S
 * logs with the batch and holds until some client confirms the delivery
 * (`revocationsDelivered`). S reports how many it holds in every search reply and getInfo;
 * a client that sees more than it knows of fetches them (`heldRevocations`) and delivers
 * them too. Until a revocation is delivered, reads of that index from F fail for F (its
 * answer could count the batch twice).
 */
import { ServerUnavailableError } from '../errors.js';
import type { ShardOperation } from '../shard-operation.js';

/** A batch moved away from `server` after it failed while holding it, not yet revoked there. */
export interface PendingRevocation {
  server: string;
  indexId: string;
  /** The batch's idempotency key on that server. */
  key: string;
}

interface Item {
  indexId: string;
  key: string;
  /** Server (index into servers) that must revoke `key`. */
  target: number;
  /** Server (index into servers) that holds this revocation durably, once the batch is stored there. */
  holder: number | null;
}

export class Revocations {
  /** Per target server: revocations not yet delivered there, oldest first. */
  private readonly pending: Item[][];
  /** Per holder server: delivered revocations it still holds, [rank, key] per index. */
  private readonly toConfirm: Array<Array<{ indexId: string; pair: [number, string] }>>;
  private readonly flushing: Array<Promise<void> | null>;
  private retryTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly servers: readonly ShardOperation[],
    private readonly retryMs: number,
  ) {
    this.pending = servers.map(() => []);
    this.toConfirm = servers.map(() => []);
    this.flushing = servers.map(() => null);
  }

  /** Undelivered revocations, per server. */
  list(): PendingRevocation[] {
    return this.pending.flatMap((items, i) => items.map((r) => ({ server: this.servers[i]!.name, indexId: r.indexId, key: r.key })));
  }

  /** Server `target` failed while holding batch `key`: revoke it there once it is reachable. */
  queue(target: number, indexId: string, key: string): Item {
    const item: Item = { indexId, key, target, holder: null };
    this.pending[target]!.push(item);
    void this.flush(target);
    return item;
  }

  /** The moved batch is now stored on `holder`, which holds these revocations durably too. */
  stored(items: readonly Item[], holder: number): void {
    for (const item of items) {
      item.holder = holder;
      // Delivered while the batch was still on its way: the holder can forget it at once.
      if (!this.pending[item.target]!.includes(item)) this.confirmLater(item);
    }
  }

  /** Revocations of `indexId` for `target` not yet delivered: reads from `target` would be wrong. */
  blocks(target: number, indexId: string): boolean {
    return this.pending[target]!.some((r) => r.indexId === indexId);
  }

  /** How many revocations of `indexId` held by `holder` this client knows (to tell when it must fetch them). */
  known(holder: number, indexId: string): number {
    let n = 0;
    for (const list of this.pending) for (const r of list) if (r.holder === holder && r.indexId === indexId) n++;
    for (const c of this.toConfirm[holder]!) if (c.indexId === indexId) n++;
    return n;
  }

  /**
   * Fetches the revocations `holder` holds for `indexId` and queues those this client did
   * not know. Resolves true when there were new ones.
   */
  async learn(holder: number, indexId: string): Promise<boolean> {
    const { result } = await this.servers[holder]!.call('query', 'heldRevocations', { indexId });
    let learned = false;
    for (const [rank, key] of result) {
      const target = this.servers.findIndex((s) => s.rank === rank);
      if (target < 0) continue; // a server this client does not know: nothing of its data reaches this client
      const known = this.pending[target]!.find((r) => r.indexId === indexId && r.key === key);
      if (known) {
        known.holder ??= holder;
        continue;
      }
      if (this.toConfirm[holder]!.some((c) => c.indexId === indexId && c.pair[0] === rank && c.pair[1] === key)) continue;
      this.pending[target]!.push({ indexId, key, target, holder });
      learned = true;
    }
    return learned;
  }

  /**
   * Fetches held revocations from each server reporting more (`held[i]`, from a search reply
   * or getInfo) than this client knows; true when there were new ones.
   */
  async learnHeld(indexId: string, held: readonly number[]): Promise<boolean> {
    // Nearly always every count is 0: only then is the bookkeeping walked.
    const ask = held.flatMap((n, i) => (n > 0 && n > this.known(i, indexId) ? [i] : []));
    if (ask.length === 0) return false;
    const learned = await Promise.all(ask.map((i) => this.learn(i, indexId).catch(() => false)));
    return learned.some(Boolean);
  }

  /**
   * Before reading index data from server `i`: deliver its pending revocations for this
   * index; if they cannot be delivered, the server counts as failed for this read.
   */
  async readyToRead(i: number, indexId: string): Promise<void> {
    if (!this.blocks(i, indexId)) return;
    await this.flush(i);
    if (this.blocks(i, indexId)) {
      const name = this.servers[i]!.name;
      throw new ServerUnavailableError(
        name,
        `server ${name} has not yet confirmed revoking batches of '${indexId}' that were moved to other servers when it failed; its answer could count them twice (retrying every ${this.retryMs} ms)`,
      );
    }
  }

  /** The index was dropped everywhere: nothing left to revoke. */
  forget(indexId: string): void {
    for (const list of [...this.pending, ...this.toConfirm]) for (let j = list.length - 1; j >= 0; j--) if (list[j]!.indexId === indexId) list.splice(j, 1);
  }

  /** One bounded attempt to deliver everything; returns what is still undelivered. */
  async close(flushMs: number): Promise<PendingRevocation[]> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.pending.some((l) => l.length > 0) || this.toConfirm.some((l) => l.length > 0)) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(this.servers.map((_, i) => this.flush(i))),
        new Promise((r) => (timer = setTimeout(r, flushMs))),
      ]);
      clearTimeout(timer);
    }
    return this.list();
  }

  /**
   * Sends server i its pending revocations, oldest first, then tells each holder it may
   * forget what was delivered; stops at the first failure and schedules a retry. Never rejects.
   */
  flush(i: number): Promise<void> {
    if (this.pending[i]!.length === 0 && this.toConfirm[i]!.length === 0) return Promise.resolve();
    this.flushing[i] ??= (async () => {
      const list = this.pending[i]!;
      try {
        while (list.length > 0) {
          const item = list[0]!;
          await this.servers[i]!.call('bulk', 'revokeBatch', { indexId: item.indexId, key: item.key });
          if (list[0] === item) list.shift();
          this.confirmLater(item);
        }
        await this.confirmHeld(i);
      } catch {
        // Down, or the index is not loaded there (yet): keep it and try again later.
        this.scheduleRetry();
      } finally {
        this.flushing[i] = null;
      }
    })();
    return this.flushing[i]!;
  }

  /** `item` was delivered to its target: its holder (if it has one yet) may forget it. */
  private confirmLater(item: Item): void {
    const rank = this.servers[item.target]!.rank;
    if (item.holder === null || rank === undefined) return;
    this.toConfirm[item.holder]!.push({ indexId: item.indexId, pair: [rank, item.key] });
    if (item.holder !== item.target) void this.flush(item.holder);
  }

  /** Tells server `holder` which of its held revocations were delivered. */
  private async confirmHeld(holder: number): Promise<void> {
    const list = this.toConfirm[holder]!;
    while (list.length > 0) {
      const indexId = list[0]!.indexId;
      const batch = list.filter((c) => c.indexId === indexId);
      await this.servers[holder]!.call('bulk', 'revocationsDelivered', { indexId, pairs: batch.map((c) => c.pair) });
      for (const c of batch) list.splice(list.indexOf(c), 1);
    }
  }

  /** One timer for all servers, every retryMs while anything is pending. */
  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      for (let i = 0; i < this.servers.length; i++) void this.flush(i);
    }, this.retryMs);
    this.retryTimer.unref();
  }
}
