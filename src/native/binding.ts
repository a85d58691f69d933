/**
 * Loads the compiled addon (build/Release/dfaiss_native.node) once. Internal: the rest
 * of dfaiss talks to FAISS through FaissIndex, never through these raw functions.
 *
 * The FAISS inside may be built for AVX2 (scripts/faiss-build.sh). Running it on a CPU
 * without AVX2 would die of SIGILL, possibly while the module's static initialisers run,
 * so the tiny dfaiss_cpu module (no FAISS, no -m flags) checks the CPU first.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { NativeLoadError } from '../errors.js';

/** FAISS's MetricType enum values. */
export const METRIC_INNER_PRODUCT = 0;
export const METRIC_L2 = 1;

/** Per-call search parameters (validated in TypeScript first). */
export interface NativeSearchParams {
  nprobe?: number;
  maxCodes?: number;
  efSearch?: number;
}

export interface RawIndex {
  dim(): number;
  ntotal(): number;
  metricType(): number;
  isTrained(): boolean;
  nlist(): number;
  nprobe(): number;
  quantizerDim(): number;
  train(x: Float32Array, n: number, threads?: number, sortRows?: boolean): Promise<void>;
  add(x: Float32Array, n: number): Promise<void>;
  addWithIds(x: Float32Array, n: number, ids: BigInt64Array): Promise<void>;
  search(x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array, params?: NativeSearchParams): Promise<void>;
  searchSync(x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array, params?: NativeSearchParams): boolean;
  /** Whether these per-call parameters travel as FAISS SearchParameters (a shared lock), not set on the index for the call. */
  takesSearchParams(params?: NativeSearchParams): boolean;
  selectorKind(): '' | 'flat' | 'ivf' | 'hnsw';
  searchSelected(x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array, params: NativeSearchParams | undefined, bitmap: Uint8Array): Promise<void>;
  searchSubset(x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array, subset: BigInt64Array): Promise<void>;
  searchAndReconstruct(
    x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array, recons: Float32Array, params?: NativeSearchParams,
  ): Promise<void>;
  reconstruct(ids: BigInt64Array, out: Float32Array): Promise<void>;
  removeIds(ids: BigInt64Array): Promise<number>;
  setParameter(name: string, value: number): Promise<void>;
  centroids(out: Float32Array): Promise<void>;
  trainedLayout(): Array<[string, number]>;
  exportTrained(out: Float32Array): Promise<void>;
  installTrainedState(state: Float32Array): Promise<void>;
  isIvf(): boolean;
  assign(x: Float32Array, n: number, out: BigInt64Array): Promise<void>;
  preassignable(): string;
  quantize(x: Float32Array, n: number, nprobe: number, assign: BigInt64Array, coarse: Float32Array): Promise<void>;
  searchPreassigned(
    x: Float32Array, n: number, k: number, distances: Float32Array, labels: BigInt64Array,
    assign: BigInt64Array, coarse: Float32Array, nprobe: number, params: NativeSearchParams | undefined, sync: boolean,
  ): Promise<void> | boolean;
  reserveLists(counts: Uint32Array): Promise<void>;
  addPreassigned(x: Float32Array, n: number, assign: BigInt64Array): Promise<void>;
  reset(): Promise<void>;
  clone(): Promise<RawIndex>;
  setThreads(n: number): void;
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
  firstNonFinite(x: Float32Array): number;
  allocBuffer(bytes: number): ArrayBuffer;
  freeBuffer(buffer: ArrayBuffer): boolean;
  trimMemory(): Promise<void>;
  dropFileCache(fd: number, offset: number, length: number): boolean;
  fp16ToFp32Async(src: Uint16Array, dst: Float32Array): Promise<void>;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  hasF16C: boolean;
  faissVersion: string;
  gpuAvailable: boolean;
  /** The SIMD level the linked FAISS was built for: 'generic', 'avx2' or 'avx512'. */
  simdLevel: string;
  /** FAISS's get_compile_options(), e.g. "OPTIMIZE AVX2". */
  faissCompileOptions: string;
  /** OpenBLAS's build description (openblas_get_config). */
  blas: string;
}

/** dfaiss_cpu.node (native/cpu_check.cc). */
interface CpuCheck {
  level: string;
  required: string[];
  missing: string[];
}

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// DFAISS_NATIVE_DIR: another build of both modules, e.g. the bench's generic variant.
export const addonDir = resolve(process.env.DFAISS_NATIVE_DIR || join(packageRoot, 'build', 'Release'));
const addonPath = join(addonDir, 'dfaiss_native.node');
const checkPath = join(addonDir, 'dfaiss_cpu.node');

/**
 * Throws unless this CPU has every instruction set the linked FAISS was built for.
 * DFAISS_SIMULATE_MISSING_CPU_FEATURES=avx2,fma (for tests) treats those features as absent
 * after the real check ran: it can only add failures, never hide a real one.
 */
function checkCpu(requireFn: NodeJS.Require): void {
  const check = requireFn(checkPath) as CpuCheck;
  const simulated = (process.env.DFAISS_SIMULATE_MISSING_CPU_FEATURES ?? '').split(',').filter((f) => check.required.includes(f));
  const missing = [...new Set([...check.missing, ...simulated])];
  if (missing.length === 0) return;
  throw new NativeLoadError(
    `the dfaiss native addon links FAISS built for ${check.level}, but this CPU lacks ${missing.join(', ')}` +
      `${simulated.length ? ' (simulated by DFAISS_SIMULATE_MISSING_CPU_FEATURES)' : ''}. Rebuild on this machine with ` +
      `'rm -rf build && npm run setup' (setup builds for the best level this CPU supports; ` +
      `DFAISS_FAISS_LEVEL=generic forces a build that runs on any x86-64 CPU)`,
  );
}

function load(): RawBinding {
  // OpenMP reads its wait policy when libgomp is loaded, i.e. with the addon. Spinning
  // waiters (the default) starve other servers on a shared machine; passive ones don't.
  process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
  if (!existsSync(addonPath)) {
    throw new NativeLoadError(
      `dfaiss native addon not found at ${addonPath}: build it with 'npm run build:native' ` +
        `or run 'npm run setup' (which also builds FAISS for this CPU)`,
    );
  }
  const requireFn = createRequire(import.meta.url);
  try {
    checkCpu(requireFn);
  } catch (err) {
    if (err instanceof NativeLoadError) throw err;
    throw new NativeLoadError(`could not load the dfaiss CPU check (${checkPath}): ${(err as Error).message}. ` +
      `Rebuild with 'npm run build:native'`, { cause: err });
  }
  try {
    return requireFn(addonPath) as RawBinding;
  } catch (err) {
    throw new NativeLoadError(`could not load the dfaiss native addon (${addonPath}): ${(err as Error).message}. ` +
      `Rebuild it with 'npm run build:native'`, { cause: err });
  }
}

export const native: RawBinding = load();
