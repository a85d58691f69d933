/**
 * Metadata of every vector a shard holds, by internal id (0, 1, 2, ... in arrival order,
 * which is also the FAISS id once the vector is indexed). Values are kept as packed
 * msgpack bytes in large arenas: a server holding tens of millions of vectors must not
 * hold tens of millions of JS objects.
 */

export interface MetadataStore {
  /** Number of entries. */
  readonly size: number;
  /** Appends n packed values (blob + n+1 offsets); returns the id of the first. */
  append(blob: Uint8Array, offsets: Uint32Array): number;
  /** Packed bytes of entry `id` (a view: copy before keeping it past the next append). */
  get(id: number): Uint8Array;
  /** Releases memory. */
  clear(): void;
}

/** Arena size: large enough to make per-arena overhead negligible, small enough to grow in steps. */
const ARENA_BYTES = 16 * 1024 * 1024;

export class InMemoryMetadataStore implements MetadataStore {
  private arenas: Uint8Array[] = [];
  /** Bytes used in the last arena. */
  private used = 0;
  /** Per entry: arena index and start offset (entries never straddle arenas), plus length. */
  private arenaOf: Uint32Array<ArrayBuffer> = new Uint32Array(1024);
  private startOf: Uint32Array<ArrayBuffer> = new Uint32Array(1024);
  private lengthOf: Uint32Array<ArrayBuffer> = new Uint32Array(1024);
  private count = 0;

  get size(): number {
    return this.count;
  }

  append(blob: Uint8Array, offsets: Uint32Array): number {
    const n = offsets.length - 1;
    const first = this.count;
    this.reserve(this.count + n);
    for (let i = 0; i < n; i++) {
      const a = offsets[i]!;
      const len = offsets[i + 1]! - a;
      const arena = this.space(len);
      const start = this.used;
      this.arenas[arena]!.set(blob.subarray(a, a + len), start);
      this.used += len;
      this.arenaOf[this.count] = arena;
      this.startOf[this.count] = start;
      this.lengthOf[this.count] = len;
      this.count++;
    }
    return first;
  }

  get(id: number): Uint8Array {
    if (!(id >= 0 && id < this.count)) throw new RangeError(`metadata id ${id} out of range 0..${this.count - 1}`);
    const start = this.startOf[id]!;
    return this.arenas[this.arenaOf[id]!]!.subarray(start, start + this.lengthOf[id]!);
  }

  clear(): void {
    this.arenas = [];
    this.used = 0;
    this.count = 0;
    this.arenaOf = new Uint32Array(1024);
    this.startOf = new Uint32Array(1024);
    this.lengthOf = new Uint32Array(1024);
  }

  /** Returns the arena that can take `len` more bytes, opening a new one when needed. */
  private space(len: number): number {
    const last = this.arenas.length - 1;
    if (last >= 0 && this.used + len <= this.arenas[last]!.byteLength) return last;
    this.arenas.push(new Uint8Array(Math.max(ARENA_BYTES, len)));
    this.used = 0;
    return this.arenas.length - 1;
  }

  private reserve(n: number): void {
    if (n <= this.arenaOf.length) return;
    let cap = this.arenaOf.length;
    while (cap < n) cap *= 2;
    const grow = (a: Uint32Array): Uint32Array<ArrayBuffer> => {
      const b = new Uint32Array(cap);
      b.set(a);
      return b;
    };
    this.arenaOf = grow(this.arenaOf);
    this.startOf = grow(this.startOf);
    this.lengthOf = grow(this.lengthOf);
  }
}
