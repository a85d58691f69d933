/**
 * A fixed-size bitset over internal ids (or FAISS labels), 32 bits a word. Its bytes are
 * FAISS's IDSelectorBitmap layout on a little-endian machine (bit i%8 of byte i/8), so
 * the selector is handed to FAISS without conversion.
 */
export class Bits {
  readonly size: number;
  readonly words: Uint32Array;

  constructor(size: number, words?: Uint32Array) {
    this.size = size;
    this.words = words ?? new Uint32Array(Math.ceil(size / 32));
  }

  /** Every id in [0, size). */
  static full(size: number): Bits {
    const b = new Bits(size);
    b.words.fill(0xffffffff);
    b.clearTail();
    return b;
  }

  /** The bytes FAISS reads (IDSelectorBitmap), a view of the same memory. */
  get bytes(): Uint8Array {
    return new Uint8Array(this.words.buffer, this.words.byteOffset, Math.ceil(this.size / 8));
  }

  has(i: number): boolean {
    return i >= 0 && i < this.size && (this.words[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  set(i: number): void {
    if (i >= 0 && i < this.size) this.words[i >>> 5]! |= 1 << (i & 31);
  }

  clone(): Bits {
    return new Bits(this.size, this.words.slice());
  }

  /** this &= other (in place). */
  and(other: Bits): this {
    const w = this.words;
    const o = other.words;
    for (let i = 0; i < w.length; i++) w[i]! &= o[i] ?? 0;
    return this;
  }

  /** this |= other (in place). */
  or(other: Bits): this {
    const w = this.words;
    const o = other.words;
    const n = Math.min(w.length, o.length);
    for (let i = 0; i < n; i++) w[i]! |= o[i]!;
    this.clearTail();
    return this;
  }

  /** this &= ~other (in place). */
  andNot(other: Bits): this {
    const w = this.words;
    const o = other.words;
    const n = Math.min(w.length, o.length);
    for (let i = 0; i < n; i++) w[i]! &= ~o[i]!;
    return this;
  }

  count(): number {
    let c = 0;
    for (const x of this.words) c += popcount(x);
    return c;
  }

  /** Calls fn with every set id, ascending; stops early when fn returns false. */
  forEach(fn: (i: number) => boolean | void): void {
    const w = this.words;
    for (let wi = 0; wi < w.length; wi++) {
      let x = w[wi]!;
      while (x !== 0) {
        const t = x & -x;
        const i = (wi << 5) + (31 - Math.clz32(t));
        if (fn(i) === false) return;
        x ^= t;
      }
    }
  }

  /** The set ids, ascending. */
  toArray(): number[] {
    const out: number[] = [];
    this.forEach((i) => {
      out.push(i);
    });
    return out;
  }

  private clearTail(): void {
    const r = this.size & 31;
    if (r !== 0 && this.words.length > 0) this.words[this.words.length - 1]! &= (1 << r) - 1;
  }
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
