/**
 * Id ranges [first, first + n) of revoked batches, sorted by first, disjoint. FAISS keeps
 * the vectors (Flat's remove_ids renumbers ids, which would break id -> metadata; HNSW
 * cannot remove at all); search skips them instead. Revocations are rare.
 */
import { ValidationError } from '../errors.js';

export class Tombstones {
  private ranges: Array<[number, number]> = [];
  private total = 0;

  /** Vectors tombstoned. */
  get count(): number {
    return this.total;
  }

  /** True when no range is tombstoned (the common case: search skips the lookups). */
  get empty(): boolean {
    return this.ranges.length === 0;
  }

  /** Tombstones [first, first + n) within `size` stored ids; false when it overlaps a range already there. */
  add(first: number, n: number, size: number): boolean {
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(n) || first < 0 || n <= 0 || first + n > size) {
      throw new ValidationError('tombstone', `an id range within the ${size} stored ids`, `[${first}, ${first + n})`);
    }
    let i = this.ranges.length;
    while (i > 0 && this.ranges[i - 1]![0] > first) i--;
    const prev = this.ranges[i - 1];
    const next = this.ranges[i];
    // Each key covers its own ids and is revoked once, so ranges never overlap; guard anyway.
    if ((prev && prev[0] + prev[1] > first) || (next && first + n > next[0])) return false;
    this.ranges.splice(i, 0, [first, n]);
    this.total += n;
    return true;
  }

  /** True when `id` belongs to a revoked batch. */
  has(id: number): boolean {
    let lo = 0;
    let hi = this.ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const [first, n] = this.ranges[mid]!;
      if (id < first) hi = mid - 1;
      else if (id >= first + n) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** Tombstoned ids below `limit`. */
  below(limit: number): number {
    let dead = 0;
    for (const [first, n] of this.ranges) {
      if (first >= limit) break;
      dead += Math.min(n, limit - first);
    }
    return dead;
  }

  /** A copy of the ranges (for snapshots). */
  list(): Array<[number, number]> {
    return this.ranges.map(([f, n]) => [f, n]);
  }
}
