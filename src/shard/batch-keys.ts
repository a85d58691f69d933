/**
 * Idempotency keys of batches: a batch whose key was stored already is not stored again (a
 * client's retry), one whose key is being stored waits for that, and one whose key the
 * client revoked (it stored the batch elsewhere) is refused. Revoking a key that is being
 * stored waits for the store first.
 */
/** Idempotency keys remembered (the newest ones), to recognise a client's retried batch. */
const MAX_KEYS = 100_000;

export interface RevokeResult {
  /**
   * 'tombstoned': the batch was stored here and its ids are now hidden; 'blocked': it never
   * arrived, and will be refused if it does; 'already': the key was revoked before.
   */
  outcome: 'tombstoned' | 'blocked' | 'already';
  /** Vectors tombstoned by this call. */
  count: number;
}

export class BatchKeys {
  /** Key -> [first internal id, vectors] of batches stored recently (insertion ordered). */
  private readonly stored = new Map<string, [number, number]>();
  /** Keys of batches being written right now, so a concurrent retry waits for the original. */
  private readonly storing = new Map<string, Promise<number>>();
  /** Keys revoked by their client (recent ones): a batch arriving with one is refused. */
  private readonly revoked = new Set<string>();
  /** Revocations being logged right now; an add with the same key waits for the outcome. */
  private readonly revoking = new Map<string, Promise<RevokeResult>>();

  /**
   * Stores the batch with `key` through `store` (which resolves with its first internal id),
   * unless the key was seen: then `skip` is called (the vectors are not needed) and the
   * answer is the first store's id, or -1 ("not stored") for a revoked key.
   */
  add(key: string, store: () => Promise<number>, skip: () => void): Promise<number> {
    if (this.revoked.has(key)) {
      skip();
      return Promise.resolve(-1);
    }
    const revoking = this.revoking.get(key);
    if (revoking) {
      const again = (): Promise<number> => this.add(key, store, skip);
      return revoking.then(again, again);
    }
    const known = this.stored.get(key);
    const inFlight = known === undefined ? this.storing.get(key) : undefined;
    if (known !== undefined || inFlight) {
      skip();
      return inFlight ?? Promise.resolve(known![0]);
    }
    const p = store().finally(() => this.storing.delete(key));
    this.storing.set(key, p);
    return p;
  }

  /**
   * Revokes `key` once: a store of it in progress finishes first (a failed one stored
   * nothing), then `log` records the outcome for the batch's [first id, vectors] ([-1, 0]:
   * never stored here). Concurrent calls share it.
   */
  revoke(key: string, log: (first: number, n: number) => Promise<RevokeResult>): Promise<RevokeResult> {
    const running = this.revoking.get(key);
    if (running) return running;
    const p = this.revokeOnce(key, log).finally(() => this.revoking.delete(key));
    this.revoking.set(key, p);
    return p;
  }

  private async revokeOnce(key: string, log: (first: number, n: number) => Promise<RevokeResult>): Promise<RevokeResult> {
    const inFlight = this.storing.get(key);
    if (inFlight) await inFlight.catch(() => {}); // failed: nothing stored, block the key
    if (this.revoked.has(key)) return { outcome: 'already', count: 0 };
    const known = this.stored.get(key);
    const [first, n] = known && known[1] > 0 ? known : [-1, 0];
    return log(first, n);
  }

  /** The batch with `key` was stored at [firstId, firstId + n). */
  remember(key: string, firstId: number, n: number): void {
    if (!key) return;
    this.stored.set(key, [firstId, n]);
    if (this.stored.size > MAX_KEYS) this.stored.delete(this.stored.keys().next().value!);
  }

  rememberRevoked(key: string): void {
    this.revoked.add(key);
    if (this.revoked.size > MAX_KEYS) this.revoked.delete(this.revoked.values().next().value!);
  }

  /** Recently stored keys with their first id and size, oldest first (for snapshots). */
  recent(): Array<[string, number, number]> {
    return [...this.stored].map(([k, [first, n]]) => [k, first, n]);
  }

  /** Recently revoked keys, oldest first (for snapshots). */
  revokedKeys(): string[] {
    return [...this.revoked];
  }
}
