/**
 * The declarative metadata filter (issue 17): its JSON form, its validation (zod, the same
 * code in the client and the server) and its normal form, a small tree of and/or/not over
 * leaf tests. docs/filters.md is the user's reference; keep the two in step.
 *
 *   { "lang": "en", "year": { "$gte": 2020 }, "$or": [{ "tags": "news" }, { "$id": { "$in": [1, 2] } }] }
 *
 * - A key that does not start with `$` is a field path (dots walk into nested objects and
 *   arrays); its value is a scalar (equality) or an object of operators, all of which must hold.
 * - `$and` / `$or` take non-empty arrays of filters, `$not` one filter; `$id` tests the
 *   record id instead of the metadata. Several keys in one object are and-ed.
 * - `$ne` is `$not` of `$eq` and `$nin` of `$in`, so they also match records without the field.
 *
 * Pure: no server or native code (the client entry loads this).
 */
import { z } from 'zod';
import { ValidationError } from '../errors.js';
import { parseWith } from '../protocol/validate.js';

export type Scalar = string | number | boolean | null;
export type Comparable = string | number;

/** Operators on one field (or on `$id`); every one given must hold. */
export interface FieldOps {
  $eq?: Scalar;
  $ne?: Scalar;
  $in?: Scalar[];
  $nin?: Scalar[];
  $gt?: Comparable;
  $gte?: Comparable;
  $lt?: Comparable;
  $lte?: Comparable;
  $exists?: boolean;
}

export type Condition = Scalar | FieldOps;

/** A filter: field conditions and `$and` / `$or` / `$not` / `$id`, and-ed together. */
export interface Filter {
  $and?: Filter[];
  $or?: Filter[];
  $not?: Filter;
  $id?: Condition;
  [field: string]: Condition | Filter | Filter[] | undefined;
}

/** Where a leaf test looks: a metadata path, or the record id. */
export type Target = { field: string; path: string[] } | { id: true };

export type LeafOp = 'eq' | 'in' | 'gt' | 'gte' | 'lt' | 'lte' | 'exists';

/** The normal form: and / or / not over leaves; `all` is the empty filter. */
export type FilterNode =
  | { kind: 'all' }
  | { kind: 'and'; nodes: FilterNode[] }
  | { kind: 'or'; nodes: FilterNode[] }
  | { kind: 'not'; node: FilterNode }
  | { kind: 'leaf'; target: Target; op: 'eq'; value: Scalar }
  | { kind: 'leaf'; target: Target; op: 'in'; values: Scalar[] }
  | { kind: 'leaf'; target: Target; op: 'gt' | 'gte' | 'lt' | 'lte'; value: Comparable }
  | { kind: 'leaf'; target: Target; op: 'exists' };

export type LeafNode = Extract<FilterNode, { kind: 'leaf' }>;

/** Limits that keep one filter's cost bounded on the server. */
export const FILTER_LIMITS = { depth: 32, nodes: 4096, inValues: 65536, stringLength: 4096, pathSegments: 16 } as const;

const scalar = z.union([z.string().max(FILTER_LIMITS.stringLength), z.number().finite(), z.boolean(), z.null()]);
const comparable = z.union([z.string().max(FILTER_LIMITS.stringLength), z.number().finite()]);
const OPERAND: Record<keyof FieldOps, { schema: z.ZodType; expected: string }> = {
  $eq: { schema: scalar, expected: 'a string, finite number, boolean or null' },
  $ne: { schema: scalar, expected: 'a string, finite number, boolean or null' },
  $in: { schema: z.array(scalar).max(FILTER_LIMITS.inValues), expected: `an array of at most ${FILTER_LIMITS.inValues} strings, finite numbers, booleans or nulls` },
  $nin: { schema: z.array(scalar).max(FILTER_LIMITS.inValues), expected: `an array of at most ${FILTER_LIMITS.inValues} strings, finite numbers, booleans or nulls` },
  $gt: { schema: comparable, expected: 'a finite number or a string' },
  $gte: { schema: comparable, expected: 'a finite number or a string' },
  $lt: { schema: comparable, expected: 'a finite number or a string' },
  $lte: { schema: comparable, expected: 'a finite number or a string' },
  $exists: { schema: z.boolean(), expected: 'true or false' },
};
const FIELD_OPS = Object.keys(OPERAND) as Array<keyof FieldOps>;
const LOGICAL = ['$and', '$or', '$not', '$id'];
const PATH_SEGMENT = /^[^.$][^.]*$/;

type Issue = { path: Array<string | number>; message: string };

class FilterIssue extends Error {
  constructor(readonly issue: Issue) {
    super(issue.message);
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** A known operator one edit away, for a did-you-mean on `$gte` typed as `$ge`. */
function suggestOp(key: string, known: readonly string[]): string {
  // A missing or extra letter ($ge, $exist) is likelier than a wrong one.
  const close = known.find((k) => k.length !== key.length && oneEditAway(key, k)) ?? known.find((k) => oneEditAway(key, k));
  return close ? ` (did you mean '${close}'?)` : '';
}

function oneEditAway(a: string, b: string): boolean {
  if (Math.abs(a.length - b.length) > 1 || a === b) return false;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  if (a.length === b.length) return a.slice(i + 1) === b.slice(i + 1);
  return a.length > b.length ? a.slice(i + 1) === b.slice(i) : a.slice(i) === b.slice(i + 1);
}

/** Walks the raw filter into its normal form, or throws a FilterIssue at the first problem. */
class Normalizer {
  private count = 0;

  filter(v: unknown, path: Array<string | number>, depth: number): FilterNode {
    this.bump(path, depth);
    if (!isPlainObject(v)) this.fail(path, 'a filter object such as { "field": value } or { "$and": [...] }');
    const nodes: FilterNode[] = [];
    for (const [key, value] of Object.entries(v)) {
      const at = [...path, key];
      if (value === undefined) continue;
      if (key === '$and' || key === '$or') {
        if (!Array.isArray(value) || value.length === 0) this.fail(at, 'a non-empty array of filters');
        const parts = value.map((f, i) => this.filter(f, [...at, i], depth + 1));
        nodes.push(parts.length === 1 ? parts[0]! : { kind: key === '$and' ? 'and' : 'or', nodes: parts });
      } else if (key === '$not') {
        nodes.push({ kind: 'not', node: this.filter(value, at, depth + 1) });
      } else if (key === '$id') {
        nodes.push(this.condition({ id: true }, value, at, depth + 1));
      } else if (key.startsWith('$')) {
        this.fail(at, `a field name or one of ${LOGICAL.join(', ')} at this level${suggestOp(key, LOGICAL)}; field operators such as ${key} go inside a field: { "field": { "${key}": ... } }`);
      } else {
        const segments = key.split('.');
        if (segments.length > FILTER_LIMITS.pathSegments || !segments.every((s) => PATH_SEGMENT.test(s))) {
          this.fail(at, `a field path of at most ${FILTER_LIMITS.pathSegments} non-empty dot-separated names, none starting with '$'`);
        }
        nodes.push(this.condition({ field: key, path: segments }, value, at, depth + 1));
      }
    }
    if (nodes.length === 0) return { kind: 'all' };
    return nodes.length === 1 ? nodes[0]! : { kind: 'and', nodes };
  }

  private condition(target: Target, v: unknown, path: Array<string | number>, depth: number): FilterNode {
    this.bump(path, depth);
    if (!isPlainObject(v)) {
      const r = scalar.safeParse(v);
      if (!r.success) this.fail(path, `a value to compare with (string, finite number, boolean or null) or an object of operators (${FIELD_OPS.join(', ')})`);
      return { kind: 'leaf', target, op: 'eq', value: r.data as Scalar };
    }
    const nodes: FilterNode[] = [];
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    if (keys.length === 0) this.fail(path, `at least one operator (${FIELD_OPS.join(', ')})`);
    for (const key of keys) {
      const at = [...path, key];
      const spec = OPERAND[key as keyof FieldOps];
      if (!spec || !Object.hasOwn(OPERAND, key)) {
        this.fail(at, `one of the operators ${FIELD_OPS.join(', ')}${suggestOp(key, FIELD_OPS)} (nested fields are written as dot paths: { "a.b": ... })`);
      }
      const r = spec.schema.safeParse(v[key]);
      if (!r.success) this.fail(at, spec.expected);
      nodes.push(leaf(target, key as keyof FieldOps, r.data));
      this.bump(at, depth + 1);
    }
    return nodes.length === 1 ? nodes[0]! : { kind: 'and', nodes };
  }

  private bump(path: Array<string | number>, depth: number): void {
    if (depth > FILTER_LIMITS.depth) this.fail(path, `a filter nested at most ${FILTER_LIMITS.depth} levels deep`);
    if (++this.count > FILTER_LIMITS.nodes) this.fail(path, `a filter of at most ${FILTER_LIMITS.nodes} conditions`);
  }

  private fail(path: Array<string | number>, message: string): never {
    throw new FilterIssue({ path, message });
  }
}

function leaf(target: Target, op: keyof FieldOps, value: unknown): FilterNode {
  switch (op) {
    case '$eq':
      return { kind: 'leaf', target, op: 'eq', value: value as Scalar };
    case '$ne':
      return { kind: 'not', node: { kind: 'leaf', target, op: 'eq', value: value as Scalar } };
    case '$in':
      return { kind: 'leaf', target, op: 'in', values: value as Scalar[] };
    case '$nin':
      return { kind: 'not', node: { kind: 'leaf', target, op: 'in', values: value as Scalar[] } };
    case '$exists': {
      const exists: FilterNode = { kind: 'leaf', target, op: 'exists' };
      return value ? exists : { kind: 'not', node: exists };
    }
    default:
      return { kind: 'leaf', target, op: op.slice(1) as 'gt' | 'gte' | 'lt' | 'lte', value: value as Comparable };
  }
}

/**
 * The zod schema of a filter (the wire contract and the client use it): structure, operand
 * types and limits; an issue's path is the path inside the filter, its message what was expected.
 */
export const filterSchema = z.unknown().superRefine((v, ctx) => {
  try {
    new Normalizer().filter(v, [], 0);
  } catch (err) {
    if (!(err instanceof FilterIssue)) throw err;
    ctx.addIssue({ code: 'custom', path: err.issue.path, message: err.issue.message, input: v });
  }
}) as unknown as z.ZodType<Filter>;

/**
 * Validates a filter and returns its normal form. Throws a ValidationError naming the path
 * inside the filter (rooted at `field`) and what was expected there.
 */
export function parseFilter(v: unknown, field = 'filter'): FilterNode {
  parseWith(filterSchema, v, field);
  return new Normalizer().filter(v, [], 0);
}

/** The checked filter as the caller wrote it (for sending); throws like parseFilter. */
export function checkFilter(v: unknown, field = 'filter'): Filter {
  if (v === undefined) throw new ValidationError(field, 'a filter object');
  parseFilter(v, field);
  return v as Filter;
}
