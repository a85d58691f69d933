/** zod failures -> ValidationError naming the field path and what was expected. */
import type { z } from 'zod';
import { ValidationError } from '../errors.js';

type Issue = z.core.$ZodIssue;

/** Parses `value` with `schema`; throws ValidationError for the first issue, rooted at `root`. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown, root: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  if (!issue) throw new ValidationError(root, 'a valid value', value);
  throw issueToValidationError(issue, value, root);
}

export function issueToValidationError(issue: Issue, input: unknown, root: string): ValidationError {
  let path = issue.path;
  if (issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined) path = [...path, issue.keys[0]];
  const field = formatPath(root, path);
  const received = valueAt(input, path);
  const expected = describeExpectation(issue);
  return issue.code === 'unrecognized_keys' ? new ValidationError(field, expected) : new ValidationError(field, expected, received);
}

function formatPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const k of path) out += typeof k === 'number' ? `[${k}]` : `.${String(k)}`;
  return out;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let cur = input;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, k)) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

function describeExpectation(issue: Issue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.expected === 'int' ? 'an integer' : issue.expected;
    case 'too_small':
    case 'too_big': {
      const small = issue.code === 'too_small';
      const bound = small ? issue.minimum : issue.maximum;
      const op = issue.exact ? 'exactly' : small ? (issue.inclusive === false ? 'more than' : 'at least') : issue.inclusive === false ? 'less than' : 'at most';
      switch (issue.origin) {
        case 'string':
          return `${op} ${bound} characters`;
        case 'array':
        case 'set':
          return `${op} ${bound} items`;
        default:
          return `a ${issue.origin === 'int' ? 'integer' : issue.origin} ${op} ${bound}`;
      }
    }
    case 'invalid_format':
      return issue.pattern ? `a string matching ${issue.pattern}` : `a valid ${issue.format}`;
    case 'not_multiple_of':
      return `a multiple of ${issue.divisor}`;
    case 'unrecognized_keys':
      return 'no unknown fields';
    case 'invalid_value':
      return issue.values.length === 1 ? JSON.stringify(fmt(issue.values[0])) : `one of ${issue.values.map((v) => JSON.stringify(fmt(v))).join(', ')}`;
    default:
      return issue.message;
  }
}

function fmt(v: unknown): unknown {
  return typeof v === 'bigint' ? `${v}n` : v;
}
