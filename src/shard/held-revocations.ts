/**
 * Revocations a shard holds for other servers: [rank, key] of attempts of batches that were
 * moved here because that server failed while holding them. Durable (logged with the batch)
 * until a client confirms their delivery, so no client has to outlive them.
 */
export class HeldRevocations {
  private readonly pairs = new Map<string, [number, string]>();

  hold(pairs: ReadonlyArray<[number, string]> | undefined): void {
    for (const [rank, key] of pairs ?? []) this.pairs.set(`${rank}\0${key}`, [rank, key]);
  }

  forget(pairs: ReadonlyArray<[number, string]> | undefined): void {
    for (const [rank, key] of pairs ?? []) this.pairs.delete(`${rank}\0${key}`);
  }

  /** The pairs of `pairs` held here. */
  known(pairs: ReadonlyArray<[number, string]>): Array<[number, string]> {
    return pairs.filter(([rank, key]) => this.pairs.has(`${rank}\0${key}`));
  }

  get size(): number {
    return this.pairs.size;
  }

  list(): Array<[number, string]> {
    return [...this.pairs.values()];
  }
}
