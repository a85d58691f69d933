// The pending buffer keeps float16 input as it arrived (issue 14, item 4): chunks handed to
// the adder stay float16 when every batch they cover is, are widened when float32 batches
// are among them, and the byte count follows what is held.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PendingBuffer, Widener } from '../../src/shard/pending-buffer.js';
import { checkHalfMatrix, isChecked, toMatrix } from '../../src/vectors.js';
import { ValidationError } from '../../src/errors.js';

const dim = 4;
/** Rows [floor(r / 64), r % 64, 0.25, 0.5] for r = first, first + 1, ...: exact in float16; the half bit patterns and the float32. */
function rows(first: number, n: number): { half: Uint16Array; wide: Float32Array } {
  const wide = Float32Array.from({ length: n * dim }, (_, i) => {
    const r = first + Math.floor(i / dim);
    return [Math.floor(r / 64), r % 64, 0.25, 0.5][i % dim]!;
  });
  const half = Uint16Array.from(wide, (v) => {
    if (v === 0) return 0;
    const e = Math.floor(Math.log2(v));
    return ((e + 15) << 10) | Math.round((v / 2 ** e - 1) * 1024);
  });
  return { wide, half };
}

test('float16 batches are held at 2 bytes a value; joined chunks stay float16 unless float32 is among them; widening gives the same rows', async () => {
  const buf = new PendingBuffer(dim);
  const a = rows(0, 3);
  const b = rows(3, 2);
  const c = rows(5, 4);
  buf.push({ vectors: checkHalfMatrix(a.half, dim, 'v') });
  buf.push({ vectors: checkHalfMatrix(b.half, dim, 'v') });
  buf.push({ vectors: toMatrix(c.wide, dim, 'v').data });
  assert.equal(buf.bytes, (3 + 2) * dim * 2 + 4 * dim * 4);
  const first = buf.takeChunk(5);
  assert.ok(first.vectors instanceof Uint16Array, 'two float16 batches join as float16');
  assert.equal(first.rows, 5);
  const widened = await new Widener(dim).widen(first.vectors);
  assert.deepEqual([...widened], [...a.wide, ...b.wide]);
  assert.ok(isChecked(widened, dim), 'widened checked rows stay checked (FAISS does not scan them again)');
  buf.commit(first);
  assert.equal(buf.bytes, 4 * dim * 4);
  buf.push({ vectors: checkHalfMatrix(rows(9, 1).half, dim, 'v') });
  const mixed = buf.takeChunk(100);
  assert.ok(mixed.vectors instanceof Float32Array, 'float32 among them: widened while joining');
  assert.deepEqual([...mixed.vectors], [...c.wide, ...rows(9, 1).wide]);
  assert.ok(isChecked(mixed.vectors, dim));
  buf.commit(mixed);
  assert.equal(buf.bytes, 0);
  assert.equal(buf.count, 0);
});

test('a float16 batch taken in part leaves its rest float16, counted at 2 bytes a value; sampled rows come back widened', async () => {
  const buf = new PendingBuffer(dim);
  const big = rows(0, 2000); // at least SOLO_ROWS: handed over without a join
  buf.push({ vectors: checkHalfMatrix(big.half, dim, 'v') });
  const sample = buf.sampleRows(50, 2000);
  for (let i = 0; i < 50; i++) {
    const row = sample[i * dim]! * 64 + sample[i * dim + 1]!;
    assert.deepEqual([...sample.subarray(i * dim, (i + 1) * dim)], [...big.wide.subarray(row * dim, (row + 1) * dim)]);
  }
  const part = buf.takeChunk(1500);
  assert.equal(part.rows, 1500);
  assert.deepEqual([...(await new Widener(dim).widen(part.vectors))], [...big.wide.subarray(0, 1500 * dim)]);
  buf.commit(part);
  assert.equal(buf.bytes, 500 * dim * 2);
  const rest = buf.takeChunk(1500);
  assert.ok(rest.vectors instanceof Uint16Array);
  assert.deepEqual([...(await new Widener(dim).widen(rest.vectors))], [...big.wide.subarray(1500 * dim)]);
});

test('float16 input is checked as it is: NaN and Infinity are refused naming the value, shape against the dim', () => {
  const v = rows(0, 2).half;
  v[6] = 0x7e00; // NaN
  assert.throws(() => checkHalfMatrix(v, dim, 'vectors'), (e: unknown) => e instanceof ValidationError && /vectors\[1\]\[2\]/.test(e.message) && /finite/.test(e.message));
  v[6] = 0xfc00; // -Infinity
  assert.throws(() => checkHalfMatrix(v, dim, 'vectors'), /vectors\[1\]\[2\]/);
  assert.throws(() => checkHalfMatrix(new Uint16Array(5), dim, 'vectors'), /multiple of dim=4/);
  assert.throws(() => checkHalfMatrix(new Uint16Array(0), dim, 'vectors'), /at least one vector/);
});
