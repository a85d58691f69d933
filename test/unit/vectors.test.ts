import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toMatrix } from '../../src/vectors.js';
import { ValidationError } from '../../src/errors.js';

// The client's pure-TS finiteness scan works in blocks of 1024 values; a bad value must be
// found and named exactly wherever it sits (block edges, the tail after the last full block).
test('toMatrix names the first NaN / Infinity at any position, in the JS scan', () => {
  const dim = 7;
  const rows = 401; // 2807 values: two full blocks and a partial one of 759 (not a multiple of 4)
  for (const pos of [0, 1, 3, 4, 1023, 1024, 1025, 2047, 2048, 2796, 2804, 2805, 2806]) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = new Float32Array(rows * dim).fill(0.5);
      x[pos] = bad;
      if (pos < 2806) x[2806] = NaN; // a later bad value must not be reported instead
      assert.throws(
        () => toMatrix(x, dim, 'vectors'),
        (e: unknown) => e instanceof ValidationError && e.message.includes(`vectors[${Math.floor(pos / dim)}][${pos % dim}]`),
        `bad value ${bad} at ${pos}`,
      );
    }
  }
  const ok = new Float32Array(rows * dim).map((_, i) => (i % 3) - 1e30 * (i % 2));
  assert.equal(toMatrix(ok, dim, 'vectors').n, rows);
});
