/**
 * Records with ids on one shard (issue 16): which internal id holds each user id, which
 * internal ids are dead (deleted or replaced), and how FAISS positions map to internal ids
 * once dead vectors have been compacted out of FAISS.
 *
 * - Internal ids stay what they were: positions in arrival order, never reused. A user id
 *   (string or safe integer) maps to the internal id of its live version (`where`).
 * - delete: the internal id is marked dead at once (a bitset); searches skip it.
 * - upsert: the new version gets a new internal id; the old one stays visible to searches
 *   until the new one is in FAISS (`replaces`), then dies in the same tick. So a search
 *   sees exactly one version at any moment, and get() (which reads `where`) the newest.
 * - Compaction: dead ids still in FAISS are listed in `toRemove`; Shard.compact() removes
 *   them with one remove_ids call. Flat renumbers what follows a removed vector, so Flat
 *   keeps `remap` (FAISS position -> internal id, ascending); IVF keeps its ids.
 *
 * Pure bookkeeping: no FAISS here (the shard drives FAISS and calls back in).
 */
import { ValidationError } from '../errors.js';

export type RecordId = string | number;

/** Longest string id, in UTF-16 code units. */
export const MAX_ID_LENGTH = 512;

/** Checks one user id: a non-empty string of at most MAX_ID_LENGTH, or a safe integer. */
export function checkRecordId(id: unknown, field: string): RecordId {
  if (typeof id === 'number' && Number.isSafeInteger(id)) return id;
  if (typeof id === 'string' && id.length > 0 && id.length <= MAX_ID_LENGTH) return id;
  throw new ValidationError(field, `a record id: a safe integer or a non-empty string of at most ${MAX_ID_LENGTH} characters`, id);
}

/** Checks a list of ids; `unique` refuses duplicates (one batch of adds or upserts). */
export function checkRecordIds(ids: unknown, field: string, opts: { unique: boolean; n?: number }): RecordId[] {
  if (!Array.isArray(ids)) throw new ValidationError(field, 'an array of record ids (strings or safe integers)', ids);
  if (opts.n !== undefined && ids.length !== opts.n) throw new ValidationError(field, `one id per vector (${opts.n})`, `${ids.length} ids`);
  const out = ids.map((id, i) => checkRecordId(id, `${field}[${i}]`));
  if (opts.unique) {
    const seen = new Map<RecordId, number>();
    out.forEach((id, i) => {
      const j = seen.get(id);
      if (j !== undefined) throw new ValidationError(`${field}[${i}]`, `an id not already in this batch (duplicate of ${field}[${j}])`, id);
      seen.set(id, i);
    });
  }
  return out;
}

/** FNV-1a (32-bit) of a string's UTF-16 code units. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * The home rank of a record id among `servers` servers: fnv1a32('i:' + decimal) for
 * integer ids, fnv1a32('s:' + string) for string ids, mod servers (docs/protocol.md).
 */
export function homeOf(id: RecordId, servers: number): number {
  return fnv1a32(typeof id === 'number' ? `i:${id}` : `s:${id}`) % servers;
}

/** Growable FAISS position -> internal id table (Flat after a compaction). */
export interface Remap {
  arr: Uint32Array;
  len: number;
}

export interface RecordsSnapshot {
  /** User id per internal id [0, metaCount); null for anonymous vectors. */
  ids: Array<RecordId | null>;
  /** Dead bitset over [0, metaCount). */
  dead: Uint8Array;
  /** FAISS position -> internal id, or null when they are equal. */
  remap: Uint32Array | null;
  /** 'ids' or 'anon' (or null: nothing stored yet). */
  mode: 'ids' | 'anon' | null;
}

export class Records {
  /** Whether this shard stores batches with ids, without, or nothing yet. */
  mode: 'ids' | 'anon' | null = null;
  private idOf: Array<RecordId | undefined> = [];
  private readonly where = new Map<RecordId, number>();
  private dead = new Uint8Array(1024);
  private deadCount = 0;
  /** New internal id -> the older internal id it replaces (until the new one is in FAISS). */
  private readonly replaces = new Map<number, number>();
  /** Dead internal ids still in FAISS, in the order they died (compaction removes a prefix). */
  toRemove: number[] = [];
  /** Dead internal ids below the shard's indexed watermark (in FAISS, or compacted out of it). */
  deadIndexed = 0;
  remap: Remap | null = null;

  /** Live records with ids. */
  get size(): number {
    return this.where.size;
  }

  /** Old versions still visible until their replacement is in FAISS. */
  get replacing(): number {
    return this.replaces.size;
  }

  get deadTotal(): number {
    return this.deadCount;
  }

  isDead(i: number): boolean {
    return (this.dead[i >> 3]! & (1 << (i & 7))) !== 0;
  }

  /** The internal id holding `id`'s newest version, or undefined. */
  lookup(id: RecordId): number | undefined {
    return this.where.get(id);
  }

  /** The user id stored at internal id i (undefined for anonymous vectors). */
  idAt(i: number): RecordId | undefined {
    return this.idOf[i];
  }

  /** True when internal id i is the live version of a record (or an anonymous live vector). */
  isCurrent(i: number): boolean {
    if (this.isDead(i)) return false;
    const id = this.idOf[i];
    return id === undefined || this.where.get(id) === i;
  }

  /**
   * Refuses a batch that does not fit this shard: mixing batches with and without ids, or
   * (for adds, not upserts) ids already stored here or being written (`reserved`).
   */
  check(ids: readonly RecordId[] | undefined, upsert: boolean, reserved: ReadonlySet<RecordId>, logging: Records['mode'] = null): void {
    const mode = ids ? 'ids' : 'anon';
    const have = this.mode ?? logging;
    if (have && have !== mode) {
      throw new ValidationError(
        'ids',
        have === 'ids' ? 'one id per vector: this index stores records with ids (every batch must carry ids)' : 'no ids: this index stores vectors without ids (batches added without ids cannot be mixed with batches that have them; use a new index)',
        ids ? 'a batch with ids' : 'a batch without ids',
      );
    }
    if (!ids || upsert) return;
    const taken = ids.filter((id) => this.where.has(id) || reserved.has(id));
    if (taken.length > 0) {
      throw new ValidationError('ids', 'ids not stored yet (use upsert to replace records)', `${taken.length} stored already: ${taken.slice(0, 5).map((t) => JSON.stringify(t)).join(', ')}${taken.length > 5 ? ', ...' : ''}`);
    }
  }

  /** Anonymous vectors [first, first + n) arrived. */
  putAnonymous(): void {
    this.mode ??= 'anon';
  }

  /** Records ids[i] now live at internal id first + i; older versions are replaced. */
  put(first: number, ids: readonly RecordId[]): void {
    this.mode = 'ids';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const at = first + i;
      this.idOf[at] = id;
      const old = this.where.get(id);
      this.where.set(id, at);
      if (old !== undefined) this.replaces.set(at, old);
    }
  }

  /**
   * Deletes records by id: their live version and any older one still waiting to be
   * replaced die now. Returns the ids found and those this shard does not hold.
   */
  delete(ids: readonly RecordId[], indexedUpTo: number): { deleted: RecordId[]; unknown: RecordId[] } {
    const deleted: RecordId[] = [];
    const unknown: RecordId[] = [];
    for (const id of ids) {
      let at = this.where.get(id);
      if (at === undefined) {
        unknown.push(id);
        continue;
      }
      this.where.delete(id);
      deleted.push(id);
      while (at !== undefined) {
        this.kill(at, indexedUpTo);
        const older = this.replaces.get(at);
        this.replaces.delete(at);
        at = older;
      }
    }
    return { deleted, unknown };
  }

  /** A revoked batch [first, first + n): its ids no longer point there. */
  revoked(first: number, n: number): void {
    for (let i = first; i < first + n; i++) {
      const id = this.idOf[i];
      if (id !== undefined && this.where.get(id) === i) this.where.delete(id);
      this.replaces.delete(i);
    }
  }

  /**
   * Internal ids [from, to) just entered FAISS (appended at FAISS positions from `pos`
   * when remapped): versions they replace die now, and those already dead await compaction.
   */
  indexed(from: number, to: number): void {
    if (this.remap) {
      this.growRemap(to - from);
      for (let i = from; i < to; i++) this.remap.arr[this.remap.len++] = i;
    }
    if (this.replaces.size === 0 && this.deadCount === 0) return;
    for (let i = from; i < to; i++) {
      const old = this.replaces.get(i);
      if (old !== undefined) {
        this.replaces.delete(i);
        this.kill(old, to);
      }
      if (this.isDead(i)) {
        this.toRemove.push(i);
        this.deadIndexed++;
      }
    }
  }

  /** FAISS label -> internal id. */
  internalOf(label: number): number {
    return this.remap ? this.remap.arr[label]! : label;
  }

  /** Internal id -> FAISS label (-1 when not in FAISS). */
  labelOf(i: number, indexedUpTo: number): number {
    if (i >= indexedUpTo) return -1;
    if (!this.remap) return i;
    const { arr, len } = this.remap;
    let lo = 0;
    let hi = len - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = arr[mid]!;
      if (v === i) return mid;
      if (v < i) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /**
   * The FAISS labels to remove for the first `count` entries of toRemove, sorted. For a
   * renumbering index (Flat) these are positions, else internal ids.
   */
  labelsToRemove(count: number, renumbers: boolean, indexedUpTo: number): BigInt64Array {
    const ids = this.toRemove.slice(0, count).sort((a, b) => a - b);
    const out = new BigInt64Array(ids.length);
    for (let i = 0; i < ids.length; i++) out[i] = BigInt(renumbers ? this.labelOf(ids[i]!, indexedUpTo) : ids[i]!);
    return out;
  }

  /**
   * The first `count` entries of toRemove are out of FAISS now. A renumbering index gets
   * its remap rebuilt without them (`ntotalBefore` FAISS positions before the removal).
   */
  removed(count: number, renumbers: boolean, ntotalBefore: number): void {
    const gone = this.toRemove.slice(0, count).sort((a, b) => a - b);
    this.toRemove = this.toRemove.slice(count);
    if (!renumbers) return;
    const arr = new Uint32Array(Math.max(1024, ntotalBefore - gone.length + 1024));
    let len = 0;
    let g = 0;
    for (let p = 0; p < ntotalBefore; p++) {
      const i = this.remap ? this.remap.arr[p]! : p;
      while (g < gone.length && gone[g]! < i) g++;
      if (g < gone.length && gone[g] === i) continue;
      arr[len++] = i;
    }
    this.remap = { arr, len };
  }

  /** A copy of the mutable parts, for a snapshot cut (ids are append-only: sliced later). */
  cut(metaCount: number): { dead: Uint8Array; remap: Uint32Array | null; mode: Records['mode']; ids: () => Array<RecordId | null> } {
    const bytes = Math.ceil(metaCount / 8);
    const dead = this.dead.slice(0, bytes);
    // Bits past metaCount in the last byte belong to later records: clear them.
    if (metaCount % 8 !== 0 && bytes > 0) dead[bytes - 1]! &= (1 << (metaCount % 8)) - 1;
    const remap = this.remap ? this.remap.arr.slice(0, this.remap.len) : null;
    const idOf = this.idOf;
    const mode = this.mode;
    return { dead, remap, mode, ids: () => (mode === 'ids' ? Array.from({ length: metaCount }, (_, i) => idOf[i] ?? null) : []) };
  }

  /**
   * Rebuilds from a snapshot. `indexedUpTo`: internal ids below it are in FAISS (or were
   * compacted out); `hidden` says which are tombstoned by revocations.
   */
  static restore(s: RecordsSnapshot, metaCount: number, indexedUpTo: number, hidden: (i: number) => boolean): Records {
    const r = new Records();
    r.mode = s.mode;
    r.reserve(metaCount);
    r.dead.set(s.dead.subarray(0, Math.min(s.dead.length, r.dead.length)));
    if (s.remap) {
      const arr = new Uint32Array(Math.max(1024, s.remap.length + 1024));
      arr.set(s.remap);
      r.remap = { arr, len: s.remap.length };
    }
    for (let i = 0; i < metaCount; i++) {
      if (r.isDead(i)) {
        r.deadCount++;
        continue;
      }
      const id = s.ids[i];
      if (id === null || id === undefined) continue;
      r.idOf[i] = id;
      if (hidden(i)) continue;
      const old = r.where.get(id);
      r.where.set(id, i);
      if (old !== undefined) r.replaces.set(i, old);
    }
    // Dead ids possibly still in FAISS: exact for Flat (its remap or identity); for IVF a
    // compacted id may be listed again, which remove_ids skips (it only over-counts).
    for (let i = 0; i < indexedUpTo; i++) if (r.isDead(i)) r.deadIndexed++;
    if (r.remap) {
      for (let p = 0; p < r.remap.len; p++) if (r.isDead(r.remap.arr[p]!)) r.toRemove.push(r.remap.arr[p]!);
    } else {
      for (let i = 0; i < indexedUpTo; i++) if (r.isDead(i)) r.toRemove.push(i);
    }
    // Replacements whose new version is in FAISS already: the old one is dead.
    for (const [nu, old] of [...r.replaces]) {
      if (nu < indexedUpTo) {
        r.replaces.delete(nu);
        r.kill(old, indexedUpTo);
      }
    }
    return r;
  }

  /** Makes room in the remap for `extra` more FAISS positions. */
  private growRemap(extra: number): void {
    const m = this.remap!;
    if (m.len + extra <= m.arr.length) return;
    const arr = new Uint32Array(Math.max(m.arr.length * 2, m.len + extra));
    arr.set(m.arr.subarray(0, m.len));
    this.remap = { arr, len: m.len };
  }

  private kill(i: number, indexedUpTo: number): void {
    if (this.isDead(i)) return;
    this.reserve(i + 1);
    this.dead[i >> 3]! |= 1 << (i & 7);
    this.deadCount++;
    if (i < indexedUpTo) {
      this.toRemove.push(i);
      this.deadIndexed++;
    }
  }

  private reserve(n: number): void {
    const bytes = Math.ceil(n / 8);
    if (bytes <= this.dead.length) return;
    let cap = this.dead.length;
    while (cap < bytes) cap *= 2;
    const d = new Uint8Array(cap);
    d.set(this.dead);
    this.dead = d;
  }
}
