/** The FAISS binding: FaissIndex plus process-wide FAISS settings. */
import { ValidationError } from '../errors.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addonDir, native } from './binding.js';

export { FaissIndex, MAX_K, checkProbeLists, normalizeL2, toIds, toMatrix } from './faiss-index.js';
export type { FaissMetric, IdsInput, ProbeLists, RangeSearchResult, SearchResult, SearchWithVectorsResult, TrainOptions, TrainedLayout, TrainedState, VectorsInput } from './faiss-index.js';

/** True when the linked FAISS has GPU support (Debian's libfaiss-dev 1.7.3 has none). */
export const gpuAvailable: boolean = native.gpuAvailable;

/** Version of the linked FAISS library, e.g. "1.7.3". */
export const faissVersion: string = native.faissVersion;

/** Which FAISS this process runs: reported by `dfaiss info`, the server's hello and status, and the bench. */
export interface FaissBuildInfo {
  version: string;
  /** The instruction-set level FAISS was built for: 'generic', 'avx2' or 'avx512'. */
  simd: string;
  /** FAISS's own get_compile_options(), e.g. "OPTIMIZE AVX2". */
  compileOptions: string;
  /** The BLAS FAISS calls for batched distances and k-means, e.g. "OpenBLAS 0.3.21 ... Haswell ...". */
  blas: string;
  gpu: boolean;
  /** The library the addon was linked with, as scripts/setup.sh recorded it (null if built by hand). */
  linked: string | null;
}

function linkedFaiss(): string | null {
  try {
    return readFileSync(join(addonDir, 'faiss-linked.txt'), 'utf8').trim();
  } catch {
    return null;
  }
}

export const faissBuild: FaissBuildInfo = Object.freeze({
  version: native.faissVersion,
  simd: native.simdLevel,
  compileOptions: native.faissCompileOptions.trim(),
  blas: native.blas.trim(),
  gpu: native.gpuAvailable,
  linked: linkedFaiss(),
});

/**
 * Sets the OpenMP (and OpenBLAS) thread count for every later FAISS call in this
 * process. n <= 0 restores the default (one per core). With several servers on one
 * machine, use cores / servers: oversubscribed OpenMP threads made batched search 20x slower here.
 */
export function setOmpNumThreads(n: number): void {
  if (!Number.isSafeInteger(n)) throw new ValidationError('threads', 'an integer (0 or less = default)', n);
  native.setNumThreads(n);
}

/**
 * Buffers whose memory goes back to the OS as soon as they are freed (mmap'd; `free`
 * detaches the buffer, so every view of it becomes empty). For receive-buffer pools, where
 * the GC would otherwise keep dropped buffers resident indefinitely.
 */
export const releasableBuffers = {
  allocate: (bytes: number): Uint8Array => new Uint8Array(native.allocBuffer(bytes)),
  free: (buf: Uint8Array): void => {
    native.freeBuffer(buf.buffer as ArrayBuffer);
  },
};

/** malloc_trim now, on a worker thread (see scheduleMemoryTrim). */
export function trimMemory(): Promise<void> {
  return native.trimMemory();
}

/**
 * Drops the clean page-cache pages of `fd`'s [offset, offset + length): see the write-ahead
 * log, which calls it for records already made durable. Advisory: false when it failed.
 */
export function dropFileCache(fd: number, offset: number, length: number): boolean {
  return native.dropFileCache(fd, offset, length);
}

let trimTimer: NodeJS.Timeout | null = null;

/**
 * Hands the free memory glibc keeps (what FAISS freed while its vectors grew, k-means
 * buffers) back to the OS once work pauses: malloc_trim on a worker thread, `delayMs`
 * after the last call. Called after every burst of adds (a training trims at once: trimMemory).
 */
export function scheduleMemoryTrim(delayMs = 500): void {
  if (trimTimer) {
    trimTimer.refresh();
    return;
  }
  trimTimer = setTimeout(() => {
    trimTimer = null;
    native.trimMemory().catch(() => {});
  }, delayMs);
  trimTimer.unref();
}

/** OpenMP threads FAISS calls currently use. */
export function getOmpNumThreads(): number {
  return native.getNumThreads();
}

/** Converts IEEE float16 values to float32 (F16C instructions where the CPU has them). */
export function fp16ToFp32(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  checkFp16Args(src, dst);
  native.fp16ToFp32(src, dst);
  return dst;
}

/** fp16ToFp32 on a worker thread, for large batches. */
export async function fp16ToFp32Async(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Promise<Float32Array> {
  checkFp16Args(src, dst);
  await native.fp16ToFp32Async(src, dst);
  return dst;
}

function checkFp16Args(src: Uint16Array, dst: Float32Array): void {
  if (!(src instanceof Uint16Array)) throw new ValidationError('src', 'a Uint16Array of float16 bit patterns', src);
  if (!(dst instanceof Float32Array) || dst.length < src.length) {
    throw new ValidationError('dst', `a Float32Array with at least ${src.length} elements`, dst);
  }
}
