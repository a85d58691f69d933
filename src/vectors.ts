/**
 * Vectors as the API takes them, and the checks every layer shares: matrix shape and
 * finiteness, metrics, the k limit. Pure TypeScript: the client imports this, never the
 * FAISS binding.
 */
import { ValidationError } from './errors.js';

/**
 * An index's metric (IndexCfg.metric): 'dot' = inner product (larger is better), 'l2' =
 * squared Euclidean distance (smaller is better), 'cosine' = cosine similarity (larger is
 * better; served as 'dot' over unit vectors).
 */
export type Metric = 'dot' | 'l2' | 'cosine';

/** The metrics a FAISS index itself computes ('cosine' runs as one of these). */
export type FaissMetric = 'dot' | 'l2';

/** Row-major Float32Array of n*dim values, or one array of numbers per vector. */
export type VectorsInput = Float32Array | ReadonlyArray<ArrayLike<number>>;

/** Vector ids: BigInt64Array, or plain safe integers / bigints. */
export type IdsInput = BigInt64Array | ReadonlyArray<number | bigint>;

/** Upper bound on k: FAISS allocates n*k results and heaps of k per query. */
export const MAX_K = 1 << 20;

declare const checkedMatrix: unique symbol;

/**
 * A row-major float32 matrix whose shape (non-empty, a multiple of its dim) and values
 * (finite) were checked once by toMatrix. The layers below (shard, FAISS binding) take it
 * without scanning it again: toMatrix returns it as it is for the same dim.
 */
export type CheckedMatrix = Float32Array & { readonly [checkedMatrix]: true };

/** Checked matrices (float32, or float16 bit patterns) and the dim they were checked for (weak: no memory is kept alive). */
const checkedDims = new WeakMap<Float32Array | Uint16Array, number>();

/** True when `x` was checked by toMatrix (or derived from checked rows) for `dim`. */
export function isChecked(x: unknown, dim: number): x is CheckedMatrix {
  return x instanceof Float32Array && checkedDims.get(x) === dim;
}

/**
 * Marks `m` checked when every matrix it was made of (a row range of one, or the rows of
 * several copied together) was: their values are its values. Returns `m`.
 */
export function deriveChecked<T extends Float32Array | Uint16Array>(m: T, dim: number, from: readonly (Float32Array | Uint16Array)[]): T {
  if (m.length > 0 && m.length % dim === 0 && from.every((f) => checkedDims.get(f) === dim)) checkedDims.set(m, dim);
  return m;
}

/**
 * Checks a row-major float16 matrix (IEEE half bit patterns) once, as toMatrix does float32:
 * shape, and no NaN or Infinity (exponent bits all ones). Servers keep float16 input as it
 * arrived while it waits for FAISS, and widen it to float32 only for FAISS's calls.
 */
export function checkHalfMatrix(x: Uint16Array, dim: number, field: string): Uint16Array {
  if (checkedDims.get(x) === dim) return x;
  if (x.length === 0) throw new ValidationError(field, 'at least one vector', 'an empty array');
  if (x.length % dim !== 0) throw new ValidationError(field, `a float16 matrix whose length is a multiple of dim=${dim}`, `length ${x.length}`);
  for (let i = 0; i < x.length; i++) {
    if ((x[i]! & 0x7c00) === 0x7c00) {
      throw new ValidationError(`${field}[${Math.floor(i / dim)}][${i % dim}]`, 'a finite number (no NaN or Infinity)', halfToFloat32(x.subarray(i, i + 1))[0]);
    }
  }
  checkedDims.set(x, dim);
  return x;
}

/** Index of the first NaN or +-Infinity in `x`, -1 when every value is finite. */
export type FiniteScan = (x: Float32Array) => number;

/**
 * Normalises vectors to a row-major Float32Array, without copying when it already is one,
 * and checks them once: a matrix toMatrix already checked for this dim is returned as it is.
 * `scan` finds non-finite values (the native binding passes its SIMD one; the client, which
 * loads no native code, the JS loop).
 */
export function toMatrix(x: VectorsInput, dim: number, field: string, scan: FiniteScan = firstNonFinite): { data: CheckedMatrix; n: number } {
  if (isChecked(x, dim)) return { data: x, n: x.length / dim };
  if (x instanceof Float32Array) {
    if (x.length === 0) throw new ValidationError(field, 'at least one vector', 'an empty array');
    if (x.length % dim !== 0) {
      throw new ValidationError(field, `a Float32Array whose length is a multiple of dim=${dim}`, `length ${x.length}`);
    }
    checkFinite(x, dim, field, scan);
    checkedDims.set(x, dim);
    return { data: x as CheckedMatrix, n: x.length / dim };
  }
  if (!Array.isArray(x)) {
    throw new ValidationError(field, 'a Float32Array (row-major) or an array of vectors', x);
  }
  if (x.length === 0) throw new ValidationError(field, 'at least one vector', 'an empty array');
  const data = new Float32Array(x.length * dim);
  for (let i = 0; i < x.length; i++) {
    const row = x[i] as ArrayLike<number> | undefined;
    if (row == null || typeof row.length !== 'number' || row.length !== dim) {
      throw new ValidationError(`${field}[${i}]`, `a vector of dim=${dim} numbers`, row == null ? row : `length ${row.length}`);
    }
    for (let j = 0; j < dim; j++) data[i * dim + j] = row[j] as number;
  }
  checkFinite(data, dim, field, scan);
  checkedDims.set(data, dim);
  return { data: data as CheckedMatrix, n: x.length };
}

/** Throws a ValidationError naming the first NaN or +-Infinity as field[row][column]. */
function checkFinite(data: Float32Array, dim: number, field: string, scan: FiniteScan): void {
  const i = scan(data);
  if (i < 0) return;
  throw new ValidationError(`${field}[${Math.floor(i / dim)}][${i % dim}]`, 'a finite number (no NaN or Infinity)', data[i]);
}

/** Values per block of the finiteness scan: small enough that a hit costs little to locate. */
const SCAN_BLOCK = 1024;

function firstNonFinite(data: Float32Array): number {
  const n = data.length;
  for (let s = 0; s < n; s += SCAN_BLOCK) {
    const e = Math.min(n, s + SCAN_BLOCK);
    // v * 0 is NaN for NaN and +-Infinity, +-0 otherwise, so a block's sum is 0 exactly
    // when all its values are finite: no branch per value, and four independent sums keep
    // the additions from waiting on each other (~2x faster than a compare per value).
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    let i = s;
    for (; i + 4 <= e; i += 4) {
      a0 += data[i]! * 0;
      a1 += data[i + 1]! * 0;
      a2 += data[i + 2]! * 0;
      a3 += data[i + 3]! * 0;
    }
    for (; i < e; i++) a0 += data[i]! * 0;
    if (a0 + a1 + a2 + a3 === 0) continue;
    for (let j = s; j < e; j++) {
      const v = data[j]!;
      if (v - v !== 0) return j;
    }
  }
  return -1;
}

export function toIds(ids: IdsInput, field: string): BigInt64Array {
  if (ids instanceof BigInt64Array) return ids;
  if (!Array.isArray(ids)) throw new ValidationError(field, 'a BigInt64Array or an array of integers', ids);
  const out = new BigInt64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (typeof v === 'bigint') out[i] = v;
    else if (typeof v === 'number' && Number.isSafeInteger(v)) out[i] = BigInt(v);
    else throw new ValidationError(`${field}[${i}]`, 'an integer', v);
  }
  return out;
}

export function checkK(k: number): void {
  if (!Number.isSafeInteger(k) || k <= 0 || k > MAX_K) {
    throw new ValidationError('k', `an integer between 1 and ${MAX_K}`, k);
  }
}

/**
 * float16 (IEEE 754 half, as Uint16Array) to float32, in plain TypeScript: for code that must
 * not load the FAISS addon (the client side, the CLI's operating commands). Servers use the
 * native conversion.
 */
export function halfToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i]!;
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    out[i] = exp === 0 ? sign * 2 ** -14 * (frac / 1024) : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return out;
}
