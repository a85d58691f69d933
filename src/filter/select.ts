/**
 * Turns a filter into the set of records it admits on one shard, as bits over internal
 * ids. Tests answered without decoding metadata go first: `$id` (the records table) and
 * fields with a payload index (set operations on their lists). What remains is evaluated
 * record by record, but only over the records the cheap tests left (an `$and` narrows as it
 * goes), decoding each record's metadata once. That scan yields to the event loop every
 * SCAN_SLICE records, so a filter over millions of records never stalls a server.
 */
import type { RecordId } from '../shard/records.js';
import { Bits } from './bits.js';
import { compilePredicate, leafTest } from './evaluate.js';
import type { PayloadIndex } from './payload-index.js';
import type { FilterNode, LeafNode } from './schema.js';

/** What a shard offers the selection. */
export interface FilterSource {
  /** The stored record's metadata, decoded. */
  metadataOf(i: number): unknown;
  /** The record id stored at internal id i (undefined for vectors without ids). */
  idOf(i: number): RecordId | undefined;
  /** The internal id of a record id's live version. */
  lookup(id: RecordId): number | undefined;
  payload: PayloadIndex | null;
}

/** Records decoded between two yields to the event loop (~10-20 ms of msgpack decoding). */
export const SCAN_SLICE = 16384;

/** Lets other work of the event loop run (a long scan must not stall a server). */
export const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export interface Selection {
  bits: Bits;
  /** Records that had to be decoded one by one (0 when the payload index answered everything). */
  scanned: number;
}

/** The records of `universe` (bits over internal ids) that pass the filter. */
export async function selectRecords(node: FilterNode, src: FilterSource, universe: Bits): Promise<Selection> {
  const sel = new Selector(src);
  const bits = await sel.eval(node, universe);
  return { bits, scanned: sel.scanned };
}

class Selector {
  scanned = 0;
  constructor(private readonly src: FilterSource) {}

  /** Whether the node is answered without decoding metadata. */
  cheap(node: FilterNode): boolean {
    switch (node.kind) {
      case 'all':
        return true;
      case 'and':
      case 'or':
        return node.nodes.every((n) => this.cheap(n));
      case 'not':
        return this.cheap(node.node);
      case 'leaf':
        return 'id' in node.target || (this.src.payload?.has(node.target.field) ?? false);
    }
  }

  async eval(node: FilterNode, cand: Bits): Promise<Bits> {
    if (this.cheap(node)) return this.cheapBits(node, cand);
    if (node.kind === 'and') {
      // Cheap parts first: the expensive ones then decode only what survived them.
      const parts = [...node.nodes].sort((a, b) => Number(this.cheap(b)) - Number(this.cheap(a)));
      let cur = cand;
      for (const p of parts) {
        cur = await this.eval(p, cur);
        if (cur.count() === 0) break;
      }
      return cur;
    }
    return this.scan(node, cand);
  }

  private cheapBits(node: FilterNode, cand: Bits): Bits {
    switch (node.kind) {
      case 'all':
        return cand.clone();
      case 'and': {
        let cur = cand;
        for (const n of node.nodes) cur = this.cheapBits(n, cur);
        return cur === cand ? cand.clone() : cur;
      }
      case 'or': {
        const out = new Bits(cand.size);
        for (const n of node.nodes) out.or(this.cheapBits(n, cand));
        return out;
      }
      case 'not':
        return cand.clone().andNot(this.cheapBits(node.node, cand));
      case 'leaf':
        return 'id' in node.target ? this.idBits(node, cand) : this.src.payload!.leafBits(node as LeafNode & { target: { field: string } }, cand.size).and(cand);
    }
  }

  /** `$id` tests: equality and $in through the records table, the rest over the candidates' ids. */
  private idBits(node: LeafNode, cand: Bits): Bits {
    const out = new Bits(cand.size);
    if (node.op === 'eq' || node.op === 'in') {
      for (const v of node.op === 'eq' ? [node.value] : node.values) {
        if (typeof v !== 'string' && typeof v !== 'number') continue;
        const at = this.src.lookup(v);
        if (at !== undefined && cand.has(at)) out.set(at);
      }
      return out;
    }
    const test = leafTest(node);
    cand.forEach((i) => {
      const id = this.src.idOf(i);
      if (test(id === undefined ? { exists: false, values: [] } : { exists: true, values: [id] })) out.set(i);
    });
    return out;
  }

  private async scan(node: FilterNode, cand: Bits): Promise<Bits> {
    const pred = compilePredicate(node);
    const out = new Bits(cand.size);
    const ids = cand.toArray();
    for (let j = 0; j < ids.length; j++) {
      if (j > 0 && j % SCAN_SLICE === 0) await yieldToLoop();
      const i = ids[j]!;
      this.scanned++;
      if (pred(this.src.metadataOf(i), this.src.idOf(i))) out.set(i);
    }
    return out;
  }
}
