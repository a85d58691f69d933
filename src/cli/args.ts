/** Shared argument parsers for commander options: errors name the flag and the expectation. */
import { InvalidArgumentError } from 'commander';

export function intArg(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${flag} expects an integer from ${min} to ${max}, got "${value}"`);
    }
    return n;
  };
}

/** One integer, or a comma-separated list of them (e.g. one port per rank). */
export function intListArg(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number[] {
  const one = intArg(flag, min, max);
  return (value: string) => value.split(',').map((v) => one(v));
}
