/**
 * Loads the compiled addon (build/Release/dfaiss_native.node) once. Internal: the rest
 * of dfaiss talks to FAISS through FaissIndex, never through these raw functions.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { NativeLoadError } from '../errors.js';

/** FAISS's MetricType enum values. */
export const METRIC_INNER_PRODUCT = 0;
export const METRIC_L2 = 1;

export interface RawIndex {
  dim(): number;
  ntotal(): number;
  metricType(): number;
  isTrained(): boolean;
  nlist(): number;
  nprobe(): number;
  quantizerDim(): number;
  train(x: Float32Array, n: number, threads?: number): Promise<void>;
  add(x: Float32Array, n: number): Promise<void>;
  addWithIds(x: Float32Array, n: number, ids: BigInt64Array): Promise<void>;
  search(x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array): Promise<void>;
  searchSync(x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array): boolean;
  searchAndReconstruct(
    x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array, recons: Float32Array,
  ): Promise<void>;
  reconstruct(ids: BigInt64Array, out: Float32Array): Promise<void>;
  removeIds(ids: BigInt64Array): Promise<number>;
  setParameter(name: string, value: number): Promise<void>;
  centroids(out: Float32Array): Promise<void>;
  coarseOnly(): boolean;
  installCentroids(centroids: Float32Array): Promise<void>;
  isIvf(): boolean;
  assign(x: Float32Array, n: number, out: BigInt64Array): Promise<void>;
  reserveLists(counts: Uint32Array): Promise<void>;
  addPreassigned(x: Float32Array, n: number, assign: BigInt64Array): Promise<void>;
  reset(): Promise<void>;
  clone(): Promise<RawIndex>;
  writeFile(path: string): Promise<void>;
  writeBuffer(): Promise<Buffer>;
  rangeSearch(x: Float32Array, n: number, radius: number): Promise<{ lims: Float64Array; labels: BigInt64Array; distances: Float32Array }>;
}

export interface RawBinding {
  NativeIndex: {
    fromFactory(dim: number, description: string, metric: number): RawIndex;
    readFile(path: string): Promise<RawIndex>;
    readBuffer(buf: Uint8Array): Promise<RawIndex>;
    normalizeL2(x: Float32Array, n: number, d: number): void;
  };
  fp16ToFp32(src: Uint16Array, dst: Float32Array): void;
  crc32c(bytes: Uint8Array, crc?: number): number;
  allocBuffer(bytes: number): ArrayBuffer;
  freeBuffer(buffer: ArrayBuffer): boolean;
  trimMemory(): Promise<void>;
  fp16ToFp32Async(src: Uint16Array, dst: Float32Array): Promise<void>;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  hasF16C: boolean;
  faissVersion: string;
  gpuAvailable: boolean;
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const addonPath = join(packageRoot, 'build', 'Release', 'dfaiss_native.node');

function load(): RawBinding {
  // OpenMP reads its wait policy when libgomp is loaded, i.e. with the addon. Spinning
  // waiters (the default) starve other servers on a shared machine; passive ones don't.
  process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
  if (!existsSync(addonPath)) {
    throw new NativeLoadError(
      `dfaiss native addon not found at ${addonPath}: build it with 'npm run build:native' ` +
        `(needs 'apt-get install libfaiss-dev libopenblas-dev'), or run 'npm run setup'`,
    );
  }
  try {
    return createRequire(import.meta.url)(addonPath) as RawBinding;
  } catch (err) {
    throw new NativeLoadError(`could not load the dfaiss native addon (${addonPath}): ${(err as Error).message}. ` +
      `Rebuild it with 'npm run build:native'`, { cause: err });
  }
}

export const native: RawBinding = load();
