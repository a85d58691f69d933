/**
 * Payload indexes (issue 17, item 3): for each field declared in the index config
 * (`indexedFields`), the internal ids of the records holding each value. A filter's tests
 * on indexed fields then become set operations on these lists instead of decoding every
 * record's metadata per query. Kept in memory only: rebuilt from the stored metadata when a
 * shard is restored (the declaration itself is part of the persisted cfg).
 *
 * Lists hold every internal id ever stored with the value, dead ones included: the caller
 * intersects with the live records. Ids arrive in ascending order, so lists stay sorted.
 */
import { Bits } from './bits.js';
import { compares, valuesAt } from './evaluate.js';
import type { LeafNode, Scalar } from './schema.js';

/** A growable list of internal ids. */
class IdList {
  arr = new Uint32Array(4);
  len = 0;

  push(i: number): void {
    if (this.len > 0 && this.arr[this.len - 1] === i) return; // one record, the same value twice (an array field)
    if (this.len === this.arr.length) {
      const a = new Uint32Array(this.arr.length * 2);
      a.set(this.arr);
      this.arr = a;
    }
    this.arr[this.len++] = i;
  }

  into(bits: Bits): void {
    for (let j = 0; j < this.len; j++) bits.set(this.arr[j]!);
  }
}

class FieldIndex {
  readonly path: string[];
  readonly byValue = new Map<Scalar, IdList>();
  readonly present = new IdList();

  constructor(field: string) {
    this.path = field.split('.');
  }

  add(i: number, metadata: unknown): void {
    const { exists, values } = valuesAt(metadata, this.path);
    if (!exists) return;
    this.present.push(i);
    for (const v of values) {
      let list = this.byValue.get(v);
      if (!list) this.byValue.set(v, (list = new IdList()));
      list.push(i);
    }
  }
}

export class PayloadIndex {
  private readonly fields = new Map<string, FieldIndex>();
  /** Internal ids below this are indexed. */
  private upTo = 0;

  constructor(fields: readonly string[]) {
    for (const f of fields) this.fields.set(f, new FieldIndex(f));
  }

  get fieldNames(): string[] {
    return [...this.fields.keys()];
  }

  /** Records indexed so far. */
  get size(): number {
    return this.upTo;
  }

  has(field: string): boolean {
    return this.fields.has(field);
  }

  /** Indexes the records [upTo, upTo + n); `metadataOf(i)` decodes record i's metadata. */
  append(n: number, metadataOf: (i: number) => unknown): void {
    if (this.fields.size === 0) {
      this.upTo += n;
      return;
    }
    for (let i = this.upTo; i < this.upTo + n; i++) {
      const m = metadataOf(i);
      for (const f of this.fields.values()) f.add(i, m);
    }
    this.upTo += n;
  }

  /** The records (as bits over [0, size)) passing one leaf test on an indexed field. */
  leafBits(node: LeafNode & { target: { field: string } }, size: number): Bits {
    const f = this.fields.get(node.target.field)!;
    const out = new Bits(size);
    switch (node.op) {
      case 'exists':
        f.present.into(out);
        break;
      case 'eq':
        f.byValue.get(node.value)?.into(out);
        break;
      case 'in':
        for (const v of new Set(node.values)) f.byValue.get(v)?.into(out);
        break;
      default:
        // Ranges walk the distinct values (fine for the categorical or bucketed fields such an
        // index is meant for; a field with a distinct value per record gains little from it).
        for (const [v, list] of f.byValue) if (v !== null && typeof v !== 'boolean' && compares(node.op, v, node.value)) list.into(out);
    }
    return out;
  }
}
