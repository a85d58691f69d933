/** Shared argument parsers for commander options: errors name the flag and the expectation. */
import { InvalidArgumentError } from 'commander';
import { readFileSync } from 'node:fs';
import { checkFilter, type Filter } from '../filter/schema.js';

export function intArg(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${flag} expects an integer from ${min} to ${max}, got "${value}"`);
    }
    return n;
  };
}

/**
 * `--filter`: a declarative filter (docs/filters.md) as JSON, or `@file` holding it. Errors
 * name the flag and the path inside the filter, e.g. `--filter.year.$gt`.
 */
export function filterArg(flag: string): (value: string) => Filter {
  return (value: string) => {
    let text = value;
    if (value.startsWith('@')) {
      try {
        text = readFileSync(value.slice(1), 'utf8');
      } catch (err) {
        throw new InvalidArgumentError(`${flag} expects JSON or @file; cannot read ${value.slice(1)}: ${(err as Error).message}`);
      }
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new InvalidArgumentError(`${flag} expects a JSON filter such as '{"lang": "en", "year": {"$gte": 2020}}' (docs/filters.md), got ${JSON.stringify(value)}: ${(err as Error).message}`);
    }
    try {
      return checkFilter(parsed, flag);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

/** One integer, or a comma-separated list of them (e.g. one port per rank). */
export function intListArg(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number[] {
  const one = intArg(flag, min, max);
  return (value: string) => value.split(',').map((v) => one(v));
}
