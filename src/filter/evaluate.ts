/**
 * Evaluates a normalised filter on one record: its decoded metadata and its id. The
 * payload index (payload-index.ts) answers the same tests from its own tables; both read
 * field values through `valuesAt`, so the two can never disagree.
 *
 * Semantics (docs/filters.md): a path walks objects by key and arrays by numeric segment;
 * a non-numeric segment over an array walks every element. An array found at the end of the
 * path contributes its elements (a test matches when any element passes). Comparisons only
 * match values of the operand's type (numbers with numbers, strings with strings).
 */
import type { RecordId } from '../shard/records.js';
import type { Comparable, FilterNode, LeafNode, Scalar } from './schema.js';

export type Predicate = (metadata: unknown, id: RecordId | undefined) => boolean;

/** The scalar values at `path` in `value`, and whether the path exists at all. */
export function valuesAt(value: unknown, path: readonly string[]): { exists: boolean; values: Scalar[] } {
  const out: Scalar[] = [];
  let exists = false;
  const walk = (cur: unknown, i: number): void => {
    if (i === path.length) {
      exists = true;
      if (Array.isArray(cur)) {
        for (const e of cur) {
          const s = asScalar(e);
          if (s !== undefined) out.push(s);
        }
      } else {
        const s = asScalar(cur);
        if (s !== undefined) out.push(s);
      }
      return;
    }
    const seg = path[i]!;
    if (Array.isArray(cur)) {
      if (/^\d+$/.test(seg)) {
        const idx = Number(seg);
        if (idx < cur.length) walk(cur[idx], i + 1);
        return;
      }
      for (const e of cur) if (e !== null && typeof e === 'object' && !Array.isArray(e)) walk(e, i);
      return;
    }
    if (cur !== null && typeof cur === 'object' && !(cur instanceof Uint8Array) && Object.hasOwn(cur, seg)) {
      walk((cur as Record<string, unknown>)[seg], i + 1);
    }
  };
  walk(value, 0);
  return { exists, values: out };
}

/** A metadata value as a filter scalar (int64 as number when safe), or undefined for objects, binary, etc. */
export function asScalar(v: unknown): Scalar | undefined {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isNaN(v) ? undefined : v;
  if (typeof v === 'bigint') return Number(v);
  return undefined;
}

/** Whether `v` passes a comparison against `bound` (only values of the bound's type compare). */
export function compares(op: 'gt' | 'gte' | 'lt' | 'lte', v: Scalar, bound: Comparable): boolean {
  if (typeof v !== typeof bound) return false;
  const a = v as Comparable;
  switch (op) {
    case 'gt':
      return a > bound;
    case 'gte':
      return a >= bound;
    case 'lt':
      return a < bound;
    case 'lte':
      return a <= bound;
  }
}

/** The test of one leaf on the scalar values found at its target. */
export function leafTest(node: LeafNode): (found: { exists: boolean; values: Scalar[] }) => boolean {
  switch (node.op) {
    case 'exists':
      return (f) => f.exists;
    case 'eq': {
      const want = node.value;
      return (f) => f.values.some((v) => v === want);
    }
    case 'in': {
      const set = new Set<Scalar>(node.values);
      return (f) => f.values.some((v) => set.has(v));
    }
    default: {
      const { op, value } = node;
      return (f) => f.values.some((v) => compares(op, v, value));
    }
  }
}

/** Compiles a filter to a predicate over (metadata, record id). */
export function compilePredicate(node: FilterNode): Predicate {
  switch (node.kind) {
    case 'all':
      return () => true;
    case 'and': {
      const parts = node.nodes.map(compilePredicate);
      return (m, id) => parts.every((p) => p(m, id));
    }
    case 'or': {
      const parts = node.nodes.map(compilePredicate);
      return (m, id) => parts.some((p) => p(m, id));
    }
    case 'not': {
      const inner = compilePredicate(node.node);
      return (m, id) => !inner(m, id);
    }
    case 'leaf': {
      const test = leafTest(node);
      const { target } = node;
      if ('id' in target) return (_m, id) => test(id === undefined ? { exists: false, values: [] } : { exists: true, values: [id] });
      return (m) => test(valuesAt(m, target.path));
    }
  }
}

/** True when the filter reads record metadata (a filter on `$id` alone does not need to decode any). */
export function readsMetadata(node: FilterNode): boolean {
  switch (node.kind) {
    case 'all':
      return false;
    case 'and':
    case 'or':
      return node.nodes.some(readsMetadata);
    case 'not':
      return readsMetadata(node.node);
    case 'leaf':
      return 'field' in node.target;
  }
}
