/**
 * FaissIndex: a real FAISS index, driven from TypeScript.
 *
 * - Every FAISS call runs on a libuv worker thread and returns a Promise, so the
 *   event loop keeps serving while FAISS trains or searches.
 * - Vectors cross as Float32Array and ids as BigInt64Array: the native side reads and
 *   writes them in place. Do not modify an array while a call that uses it is pending.
 * - Searches may overlap; train/add/remove/setParameter/reset are exclusive (RwLock).
 * - Inputs are validated here, before FAISS sees them; FAISS's own exceptions become
 *   FaissError with FAISS's message.
 */
import { FaissError, GpuUnavailableError, ValidationError } from '../errors.js';
import { METRIC_INNER_PRODUCT, METRIC_L2, native, type RawIndex } from './binding.js';
import { RwLock } from './rwlock.js';

/** 'dot' = inner product (larger is better), 'l2' = squared Euclidean distance (smaller is better). */
export type Metric = 'dot' | 'l2';

/** Row-major Float32Array of n*dim values, or one array of numbers per vector. */
export type VectorsInput = Float32Array | ReadonlyArray<ArrayLike<number>>;

/** Vector ids: BigInt64Array, or plain safe integers / bigints. */
export type IdsInput = BigInt64Array | ReadonlyArray<number | bigint>;

export interface SearchResult {
  /** Number of queries. */
  readonly n: number;
  /** Hits per query. */
  readonly k: number;
  /** n*k scores, row-major: inner products for 'dot', squared distances for 'l2'. */
  readonly distances: Float32Array;
  /** n*k ids, row-major; -1 where fewer than k vectors exist. */
  readonly labels: BigInt64Array;
}

export interface RangeSearchResult {
  readonly n: number;
  /** n+1 offsets: query q's hits are [lims[q], lims[q+1]). */
  readonly lims: Float64Array;
  readonly labels: BigInt64Array;
  readonly distances: Float32Array;
}

/** Scales each of the n rows of x (n x dim) to unit L2 norm, in place, natively (FAISS fvec_renorm_L2). */
export function normalizeL2(x: Float32Array, dim: number): void {
  if (!(x instanceof Float32Array) || !Number.isSafeInteger(dim) || dim <= 0 || x.length % dim !== 0) {
    throw new ValidationError('vectors', `a Float32Array whose length is a multiple of dim=${dim}`, x);
  }
  native.NativeIndex.normalizeL2(x, x.length / dim, dim);
}

export interface SearchWithVectorsResult extends SearchResult {
  /** n*k*dim reconstructed vectors of the hits (zeros... for -1 labels). */
  readonly vectors: Float32Array;
}

/** Upper bound on k: FAISS allocates n*k results and heaps of k per query. */
export const MAX_K = 1 << 20;

/** FAISS's distance for an empty result slot (largest float32), negated for inner product. */
const FLT_MAX = 3.4028234663852886e38;

export class FaissIndex {
  readonly dim: number;
  readonly metric: Metric;
  /** The index_factory description it was built from ('' when read from disk). */
  readonly description: string;
  private readonly raw: RawIndex;
  private readonly lock = new RwLock();
  private readonly params = new Map<string, number>();

  private constructor(raw: RawIndex, description: string) {
    this.raw = raw;
    this.dim = raw.dim();
    this.metric = raw.metricType() === METRIC_INNER_PRODUCT ? 'dot' : 'l2';
    this.description = description;
  }

  /**
   * Builds an index from a FAISS index_factory string, e.g. 'Flat', 'IVF1024,Flat',
   * 'IVF256,PQ16x8', 'HNSW32', 'PCA64,IVF256,SQ8'.
   */
  static fromFactory(dim: number, description: string, metric: Metric = 'l2'): FaissIndex {
    if (!Number.isSafeInteger(dim) || dim <= 0) throw new ValidationError('dim', 'a positive integer', dim);
    if (typeof description !== 'string' || description.trim() === '') {
      throw new ValidationError('description', 'a non-empty FAISS index_factory string such as "Flat" or "IVF256,Flat"', description);
    }
    if (metric !== 'dot' && metric !== 'l2') throw new ValidationError('metric', "'dot' or 'l2'", metric);
    if (/(^|,)\s*GPU/i.test(description) && !native.gpuAvailable) {
      throw new GpuUnavailableError(`'${description}' asks for a GPU index, but this FAISS build has no GPU support; use a CPU index type`);
    }
    try {
      return new FaissIndex(native.NativeIndex.fromFactory(dim, description, metric === 'dot' ? METRIC_INNER_PRODUCT : METRIC_L2), description);
    } catch (err) {
      throw new FaissError(`index_factory(${dim}, "${description}", ${metric}) failed: ${cleanFaissMessage((err as Error).message)}`, { cause: err });
    }
  }

  /** Reads an index written by writeFile (or by FAISS's write_index in any language). */
  static async readFile(path: string): Promise<FaissIndex> {
    if (typeof path !== 'string' || path === '') throw new ValidationError('path', 'a file path', path);
    return new FaissIndex(await wrap(native.NativeIndex.readFile(path)), '');
  }

  /** Reads an index serialized by toBuffer. */
  static async fromBuffer(buf: Uint8Array): Promise<FaissIndex> {
    if (!(buf instanceof Uint8Array) || buf.byteLength === 0) throw new ValidationError('buffer', 'a non-empty Uint8Array', buf);
    return new FaissIndex(await wrap(native.NativeIndex.readBuffer(buf)), '');
  }

  /** Number of vectors in the index. */
  get ntotal(): number {
    return this.raw.ntotal();
  }

  get isTrained(): boolean {
    return this.raw.isTrained();
  }

  /** Number of IVF lists, or -1 when the index is not IVF. */
  get nlist(): number {
    return this.raw.nlist();
  }

  /** IVF lists probed per query, or -1 when the index is not IVF. */
  get nprobe(): number {
    return this.raw.nprobe();
  }

  /** Parameters set through setParameter, in order (FAISS has no getter for them). */
  get parameters(): ReadonlyMap<string, number> {
    return this.params;
  }

  /**
   * Trains the index (k-means for IVF, codebooks for PQ/SQ); a no-op for Flat.
   * `threads` overrides the thread count (setNumThreads) for this training only.
   */
  async train(x: VectorsInput, opts: { threads?: number } = {}): Promise<void> {
    const { data, n } = toMatrix(x, this.dim, 'x');
    const threads = opts.threads ?? 0;
    if (!Number.isSafeInteger(threads) || threads < 0 || threads > 1024) throw new ValidationError('threads', 'an integer from 1 to 1024', threads);
    await this.lock.write(() => wrap(this.raw.train(data, n, threads)));
  }

  /** Appends vectors; their ids are ntotal, ntotal+1, ... */
  async add(x: VectorsInput): Promise<void> {
    const { data, n } = toMatrix(x, this.dim, 'x');
    if (!this.raw.isTrained()) throw new FaissError('index is not trained: call train() before add()');
    await this.lock.write(() => wrap(this.raw.add(data, n)));
  }

  /** Adds vectors with explicit ids (IVF and IDMap indexes; Flat and HNSW refuse). */
  async addWithIds(x: VectorsInput, ids: IdsInput): Promise<void> {
    const { data, n } = toMatrix(x, this.dim, 'x');
    const idArr = toIds(ids, 'ids');
    if (idArr.length !== n) throw new ValidationError('ids', `${n} ids, one per vector`, `${idArr.length} ids`);
    if (!this.raw.isTrained()) throw new FaissError('index is not trained: call train() before addWithIds()');
    await this.lock.write(() => wrap(this.raw.addWithIds(data, n, idArr)));
  }

  /** k nearest neighbours of each query. k may exceed ntotal: the unused slots hold id -1. */
  async search(queries: VectorsInput, k: number): Promise<SearchResult> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    const distances = new Float32Array(n * k);
    const labels = new BigInt64Array(n * k);
    await this.lock.read(() => (this.answeredEmpty(distances, labels) ? Promise.resolve() : wrap(this.raw.search(data, n, k, distances, labels))));
    return { n, k, distances, labels };
  }

  /**
   * An empty index answers every slot empty (id -1, FAISS's worst distance) without calling
   * FAISS: an empty HNSW would start from an entry point it does not have. Called under the
   * lock, so an add that is running or queued is waited for, not raced.
   */
  private answeredEmpty(distances: Float32Array, labels: BigInt64Array): boolean {
    if (this.raw.ntotal() !== 0) return false;
    distances.fill(this.metric === 'l2' ? FLT_MAX : -FLT_MAX);
    labels.fill(-1n);
    return true;
  }

  /**
   * search() on the calling thread, for searches so small (a few hundred µs) that the hop
   * to a worker thread costs more than they do; the caller judges the size. Returns null,
   * without searching, when a write holds the index or waits for it: use search() then.
   */
  searchInline(queries: VectorsInput, k: number): SearchResult | null {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    if (!this.lock.readableNow) return null;
    const distances = new Float32Array(n * k);
    const labels = new BigInt64Array(n * k);
    if (this.answeredEmpty(distances, labels)) return { n, k, distances, labels };
    let done: boolean;
    try {
      done = this.raw.searchSync(data, n, k, distances, labels);
    } catch (err) {
      throw new FaissError(cleanFaissMessage((err as Error).message), { cause: err });
    }
    return done ? { n, k, distances, labels } : null;
  }

  /** search() plus the stored (reconstructed) vector of every hit. */
  async searchAndReconstruct(queries: VectorsInput, k: number): Promise<SearchWithVectorsResult> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    const distances = new Float32Array(n * k);
    const labels = new BigInt64Array(n * k);
    const vectors = new Float32Array(n * k * this.dim);
    await this.lock.read(() =>
      this.answeredEmpty(distances, labels) ? Promise.resolve() : wrap(this.raw.searchAndReconstruct(data, n, k, distances, labels, vectors)),
    );
    return { n, k, distances, labels, vectors };
  }

  /** The stored vectors of the given ids (row-major, ids.length*dim). */
  async reconstruct(ids: IdsInput): Promise<Float32Array> {
    const idArr = toIds(ids, 'ids');
    const out = new Float32Array(idArr.length * this.dim);
    if (idArr.length === 0) return out;
    await this.lock.write(() => wrap(this.raw.reconstruct(idArr, out)));
    return out;
  }

  /** Removes the given ids; returns how many were removed. Not every index type supports it. */
  async removeIds(ids: IdsInput): Promise<number> {
    const idArr = toIds(ids, 'ids');
    if (idArr.length === 0) return 0;
    return this.lock.write(() => wrap(this.raw.removeIds(idArr)));
  }

  /**
   * Sets a search/index parameter through FAISS's ParameterSpace: 'nprobe', 'efSearch',
   * 'k_factor', 'max_codes', 'ht', ... Unknown names raise FaissError with FAISS's message.
   */
  async setParameter(name: string, value: number): Promise<void> {
    if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new ValidationError('name', 'a FAISS parameter name such as "nprobe" or "efSearch"', name);
    }
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new ValidationError(name, 'a finite number', value);
    await this.lock.write(() => wrap(this.raw.setParameter(name, value)));
    this.params.set(name, value);
  }

  /** The IVF coarse centroids, nlist*dq row-major (dq is the quantizer's dimension, after any PCA). */
  async centroids(): Promise<{ nlist: number; dim: number; data: Float32Array }> {
    const nlist = this.raw.nlist();
    if (nlist < 0) throw new FaissError('index is not an IVF index; it has no centroids');
    const dq = this.raw.quantizerDim();
    const out = new Float32Array(nlist * dq);
    await this.lock.read(() => wrap(this.raw.centroids(out)));
    return { nlist, dim: dq, data: out };
  }

  /**
   * True when training this index is only its IVF coarse quantizer (a flat one): IVF-Flat,
   * IVF-SQ with fp16 or direct codes. Its centroids are then its whole trained state.
   */
  get trainsCentroidsOnly(): boolean {
    return this.raw.coarseOnly();
  }

  /**
   * Trains an untrained index of that kind (trainsCentroidsOnly) by installing centroids
   * (nlist x quantizer dim, row-major, finite), as trained elsewhere.
   */
  async installCentroids(centroids: Float32Array): Promise<void> {
    const nlist = this.raw.nlist();
    const dq = this.raw.quantizerDim();
    if (!(centroids instanceof Float32Array) || nlist < 0 || centroids.length !== nlist * dq) {
      throw new ValidationError('centroids', `${nlist} x ${dq} float32 values (nlist x quantizer dim)`, centroids instanceof Float32Array ? `${centroids.length} values` : centroids);
    }
    toMatrix(centroids, dq, 'centroids'); // finite values only
    await this.lock.write(() => wrap(this.raw.installCentroids(centroids)));
  }

  /** True for an IVF index at the top level (no transform or wrapper): assign, reserveLists and addPreassigned apply. */
  get isIvf(): boolean {
    return this.raw.isIvf();
  }

  /**
   * The inverted list each vector goes to (the coarse quantizer's half of an add), under
   * the shared lock: searches keep running meanwhile.
   */
  async assign(x: VectorsInput): Promise<BigInt64Array> {
    const { data, n } = toMatrix(x, this.dim, 'x');
    const out = new BigInt64Array(n);
    await this.lock.read(() => wrap(this.raw.assign(data, n, out)));
    return out;
  }

  /** Makes room for counts[l] more vectors in inverted list l (nlist entries), so lists do not grow by doubling. */
  async reserveLists(counts: Uint32Array): Promise<void> {
    if (!(counts instanceof Uint32Array) || counts.length !== this.nlist) throw new ValidationError('counts', `a Uint32Array of nlist = ${this.nlist} entries`, counts);
    await this.lock.write(() => wrap(this.raw.reserveLists(counts)));
  }

  /** add() with the lists from assign(): only the appending half runs under the exclusive lock. */
  async addPreassigned(x: VectorsInput, assign: BigInt64Array): Promise<void> {
    const { data, n } = toMatrix(x, this.dim, 'x');
    if (!(assign instanceof BigInt64Array) || assign.length !== n) throw new ValidationError('assign', `a BigInt64Array of ${n} list numbers, one per vector`, assign);
    await this.lock.write(() => wrap(this.raw.addPreassigned(data, n, assign)));
  }

  /** Removes all vectors (keeps training). */
  async reset(): Promise<void> {
    await this.lock.write(() => wrap(this.raw.reset()));
  }

  /** Deep copy, e.g. to hand one trained, empty index to several shards. */
  async clone(): Promise<FaissIndex> {
    const raw = await this.lock.read(() => wrap(this.raw.clone()));
    const copy = new FaissIndex(raw, this.description);
    for (const [k, v] of this.params) copy.params.set(k, v);
    return copy;
  }

  /**
   * All stored vectors within `radius` of each query (FAISS range_search): squared L2
   * distance below radius for 'l2', inner product above it for 'dot'. Hits of query q are
   * labels/distances[lims[q], lims[q+1]), unsorted. Index types without range search
   * (HNSW, PQ without IVF, ...) fail with FaissError naming the type.
   */
  async rangeSearch(queries: VectorsInput, radius: number): Promise<RangeSearchResult> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    if (typeof radius !== 'number' || !Number.isFinite(radius)) throw new ValidationError('radius', 'a finite number', radius);
    if (this.raw.ntotal() === 0) return { n, lims: new Float64Array(n + 1), labels: new BigInt64Array(0), distances: new Float32Array(0) };
    try {
      const r = await this.lock.read(() => this.raw.rangeSearch(data, n, radius));
      return { n, ...r };
    } catch (err) {
      const msg = cleanFaissMessage((err as Error).message);
      throw new FaissError(`range search is not supported by this index type${this.description ? ` ('${this.description}')` : ''}: ${msg}; use search() with k, or an index type with range search (Flat, IVF-Flat, IVF-SQ)`, { cause: err });
    }
  }

  /** Writes the index with FAISS's write_index. Callers wanting atomicity write to a temp name and rename. */
  async writeFile(path: string): Promise<void> {
    if (typeof path !== 'string' || path === '') throw new ValidationError('path', 'a file path', path);
    await this.lock.read(() => wrap(this.raw.writeFile(path)));
  }

  /** Serializes the index (FAISS's own format) into a Buffer. */
  async toBuffer(): Promise<Buffer> {
    return this.lock.read(() => wrap(this.raw.writeBuffer()));
  }
}

function checkK(k: number): void {
  if (!Number.isSafeInteger(k) || k <= 0 || k > MAX_K) {
    throw new ValidationError('k', `an integer between 1 and ${MAX_K}`, k);
  }
}

/** Normalises vectors to a row-major Float32Array, without copying when it already is one. */
export function toMatrix(x: VectorsInput, dim: number, field: string): { data: Float32Array; n: number } {
  if (x instanceof Float32Array) {
    if (x.length === 0) throw new ValidationError(field, 'at least one vector', 'an empty array');
    if (x.length % dim !== 0) {
      throw new ValidationError(field, `a Float32Array whose length is a multiple of dim=${dim}`, `length ${x.length}`);
    }
    checkFinite(x, dim, field);
    return { data: x, n: x.length / dim };
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
  checkFinite(data, dim, field);
  return { data, n: x.length };
}

function checkFinite(data: Float32Array, dim: number, field: string): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // v - v is NaN for NaN and +-Infinity, 0 otherwise: one comparison per value.
    if (v - v !== 0) {
      const row = Math.floor(i / dim);
      throw new ValidationError(`${field}[${row}][${i % dim}]`, 'a finite number (no NaN or Infinity)', v);
    }
  }
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

async function wrap<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof Error && !(err instanceof FaissError)) {
      throw new FaissError(cleanFaissMessage(err.message), { cause: err });
    }
    throw err;
  }
}

/** FAISS messages look like "Error in void faiss::X(...) at /path/file.cpp:123: <message>"; keep the message. */
function cleanFaissMessage(msg: string): string {
  const m = /^Error in .*? at \S+:\d+: (.*)$/s.exec(msg);
  return m ? `${m[1]!.trim()} (FAISS)` : msg;
}
