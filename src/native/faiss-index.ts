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
import { createHash } from 'node:crypto';
import { FaissError, GpuUnavailableError, ValidationError } from '../errors.js';
import { METRIC_INNER_PRODUCT, METRIC_L2, native, type NativeSearchParams, type RawIndex } from './binding.js';
import { RwLock } from './rwlock.js';
import { MAX_K, checkK, toIds, toMatrix as toMatrixWith, type CheckedMatrix, type FaissMetric, type IdsInput, type VectorsInput } from '../vectors.js';

export { MAX_K, toIds };

/** vectors.ts's toMatrix with the native SIMD finiteness scan (~10x the JS loop). */
export function toMatrix(x: VectorsInput, dim: number, field: string): { data: CheckedMatrix; n: number } {
  return toMatrixWith(x, dim, field, native.firstNonFinite);
}
export type { FaissMetric, IdsInput, VectorsInput };


/** [part name, float count] of an index's trained state, in order. */
export type TrainedLayout = Array<[string, number]>;

/** Options of FaissIndex.train. */
export interface TrainOptions {
  /** Thread count (setOmpNumThreads) for this training only. @default the process-wide count */
  threads?: number;
  /**
   * Sort the rows lexicographically first, IN PLACE (x is reordered when it is a Float32Array):
   * FAISS's k-means seeds its centroids by row position, so this makes the trained state depend
   * only on the set of rows, not on their order. @default false
   */
  sortRows?: boolean;
}

/** An index's trained state as plain numbers (shared training ships this, never an index). */
export interface TrainedState {
  layout: TrainedLayout;
  data: Float32Array;
}

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

/**
 * A batch's probe lists: for each of n queries its nprobe nearest IVF lists (-1: none) and
 * their coarse distances, row-major n x nprobe, as quantize() finds them.
 */
export interface ProbeLists {
  nprobe: number;
  assign: BigInt64Array;
  coarse: Float32Array;
}

export interface SearchWithVectorsResult extends SearchResult {
  /** n*k*dim reconstructed vectors of the hits (zeros... for -1 labels). */
  readonly vectors: Float32Array;
}


/** FAISS's distance for an empty result slot (largest float32), negated for inner product. */
const FLT_MAX = 3.4028234663852886e38;

export class FaissIndex {
  readonly dim: number;
  readonly metric: FaissMetric;
  /** The index_factory description it was built from ('' when read from disk). */
  readonly description: string;
  private readonly raw: RawIndex;
  private readonly lock = new RwLock();
  /** quantizerFingerprint's value, once known (undefined: not computed since the last training). */
  private fingerprint: string | null | undefined;
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
  static fromFactory(dim: number, description: string, metric: FaissMetric = 'l2'): FaissIndex {
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
   * See TrainOptions for `threads` and `sortRows`. An IVF-Flat or IVF-PQ trains on the rows
   * FAISS would subsample to (nlist or ksub x 256), picked in place: `x` comes back reordered.
   */
  async train(x: VectorsInput, opts: TrainOptions = {}): Promise<void> {
    const { data, n } = toMatrix(x, this.dim, 'x');
    const threads = opts.threads ?? 0;
    if (!Number.isSafeInteger(threads) || threads < 0 || threads > 1024) throw new ValidationError('threads', 'an integer from 1 to 1024', threads);
    this.fingerprint = undefined;
    await this.lock.write(() => wrap(this.raw.train(data, n, threads, opts.sortRows === true)));
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
  /**
   * k nearest neighbours of each query. `params` (nprobe, maxCodes, efSearch) apply to this
   * call only, as FAISS SearchParameters; the index's own settings never change. Index types
   * that refuse SearchParameters in FAISS 1.7.3 (fast-scan IVF) get them for the one search
   * under the exclusive lock instead.
   */
  async search(queries: VectorsInput, k: number, params?: NativeSearchParams): Promise<SearchResult> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    const distances = new Float32Array(n * k);
    const labels = new BigInt64Array(n * k);
    await this.withParamsLock(params, () => (this.answeredEmpty(distances, labels) ? Promise.resolve() : wrap(this.raw.search(data, n, k, distances, labels, params))));
    return { n, k, distances, labels };
  }

  /** '' when quantize and searchPreassigned apply to this index, else why not (see native PreassignRefusal). */
  get preassignRefusal(): string {
    return this.raw.preassignable();
  }

  /**
   * A hash of what quantize() depends on (metric, nlist, dimension and the coarse
   * centroids), or null when quantize does not apply. Two indexes with the same
   * fingerprint find the same probe lists for the same queries. Computed once per training.
   */
  async quantizerFingerprint(): Promise<string | null> {
    if (this.fingerprint !== undefined) return this.fingerprint;
    if (this.preassignRefusal !== '') return null;
    const { nlist, dim, data } = await this.centroids();
    const hash = createHash('sha256').update(`${this.metric}:${nlist}:${dim}:`).update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.fingerprint = hash.digest('base64url').slice(0, 22);
    return this.fingerprint;
  }

  /** Each query's `nprobe` nearest lists (nprobe capped at nlist) and coarse distances: the first half of an IVF search. */
  async quantize(queries: VectorsInput, nprobe: number): Promise<ProbeLists> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    if (!Number.isSafeInteger(nprobe) || nprobe < 1) throw new ValidationError('nprobe', 'a positive integer', nprobe);
    const width = Math.min(nprobe, Math.max(1, this.nlist));
    const assign = new BigInt64Array(n * width);
    const coarse = new Float32Array(n * width);
    await this.lock.read(() => wrap(this.raw.quantize(data, n, width, assign, coarse)));
    return { nprobe: width, assign, coarse };
  }

  /**
   * search() with the probe lists given (quantize() of an index with the same
   * quantizerFingerprint): the same hits, without the coarse search. `params.maxCodes`
   * applies; the probe count is the lists' width.
   */
  async searchPreassigned(queries: VectorsInput, k: number, probes: ProbeLists, params?: NativeSearchParams): Promise<SearchResult> {
    const { data, n, distances, labels } = this.preassignedArgs(queries, k, probes);
    await this.lock.read(() =>
      this.answeredEmpty(distances, labels) ? Promise.resolve() : wrap(this.raw.searchPreassigned(data, n, k, distances, labels, probes.assign, probes.coarse, probes.nprobe, params, false) as Promise<void>),
    );
    return { n, k, distances, labels };
  }

  /** searchPreassigned on the calling thread, as searchInline (null: a write holds the index). */
  searchPreassignedInline(queries: VectorsInput, k: number, probes: ProbeLists, params?: NativeSearchParams): SearchResult | null {
    const { data, n, distances, labels } = this.preassignedArgs(queries, k, probes);
    if (!this.lock.readableNow) return null;
    if (this.answeredEmpty(distances, labels)) return { n, k, distances, labels };
    let done: boolean;
    try {
      done = this.raw.searchPreassigned(data, n, k, distances, labels, probes.assign, probes.coarse, probes.nprobe, params, true) as boolean;
    } catch (err) {
      throw new FaissError(cleanFaissMessage((err as Error).message), { cause: err });
    }
    return done ? { n, k, distances, labels } : null;
  }

  private preassignedArgs(queries: VectorsInput, k: number, probes: ProbeLists): { data: Float32Array; n: number; distances: Float32Array; labels: BigInt64Array } {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    checkProbeLists(probes, n, this.nlist);
    return { data, n, distances: new Float32Array(n * k), labels: new BigInt64Array(n * k) };
  }

  /** Read lock, or the write lock when per-call parameters must be set on the index itself. */
  private withParamsLock<T>(params: NativeSearchParams | undefined, fn: () => Promise<T>): Promise<T> {
    const override = params !== undefined && Object.keys(params).length > 0 && !this.raw.takesSearchParams(params);
    return override ? this.lock.write(fn) : this.lock.read(fn);
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
  searchInline(queries: VectorsInput, k: number, params?: NativeSearchParams): SearchResult | null {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    if (!this.lock.readableNow) return null;
    const distances = new Float32Array(n * k);
    const labels = new BigInt64Array(n * k);
    if (this.answeredEmpty(distances, labels)) return { n, k, distances, labels };
    let done: boolean;
    try {
      done = this.raw.searchSync(data, n, k, distances, labels, params);
    } catch (err) {
      throw new FaissError(cleanFaissMessage((err as Error).message), { cause: err });
    }
    return done ? { n, k, distances, labels } : null;
  }

  /**
   * How searchSelected walks this index type: 'flat' (every vector), 'ivf' (the probed lists;
   * not fast scan), 'hnsw' (the graph); null when it cannot (other types take searchSubset).
   */
  get selectorKind(): 'flat' | 'ivf' | 'hnsw' | null {
    return this.raw.selectorKind() || null;
  }

  /**
   * search() scoring only the labels whose bit is set in `bitmap` (FAISS IDSelectorBitmap:
   * bit i%8 of byte i/8), passed as SearchParameters::sel with this call's `params`.
   * Fewer than k hits come back when the walk (nprobe lists, efSearch) meets fewer matches.
   */
  async searchSelected(queries: VectorsInput, k: number, bitmap: Uint8Array, params?: NativeSearchParams): Promise<SearchResult> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    if (!(bitmap instanceof Uint8Array)) throw new ValidationError('bitmap', 'a Uint8Array', bitmap);
    const distances = new Float32Array(n * k);
    const labels = new BigInt64Array(n * k);
    await this.withParamsLock(params, () => (this.answeredEmpty(distances, labels) ? Promise.resolve() : wrap(this.raw.searchSelected(data, n, k, distances, labels, params, bitmap))));
    return { n, k, distances, labels };
  }

  /**
   * Exact k nearest neighbours among the given labels only (their stored vectors,
   * reconstructed: the index's own codes), any index type that can reconstruct. IVF builds
   * its direct map on first use, as reconstruct() does.
   */
  async searchSubset(queries: VectorsInput, k: number, subset: BigInt64Array): Promise<SearchResult> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    if (!(subset instanceof BigInt64Array)) throw new ValidationError('subset', 'a BigInt64Array of labels', subset);
    const distances = new Float32Array(n * k).fill(this.metric === 'l2' ? FLT_MAX : -FLT_MAX);
    const labels = new BigInt64Array(n * k).fill(-1n);
    if (subset.length > 0) await this.lock.read(() => wrap(this.raw.searchSubset(data, n, k, distances, labels, subset)));
    return { n, k, distances, labels };
  }

  /** search() plus the stored (reconstructed) vector of every hit. */
  async searchAndReconstruct(queries: VectorsInput, k: number, params?: NativeSearchParams): Promise<SearchWithVectorsResult> {
    const { data, n } = toMatrix(queries, this.dim, 'queries');
    checkK(k);
    const distances = new Float32Array(n * k);
    const labels = new BigInt64Array(n * k);
    const vectors = new Float32Array(n * k * this.dim);
    await this.withParamsLock(params, () =>
      this.answeredEmpty(distances, labels) ? Promise.resolve() : wrap(this.raw.searchAndReconstruct(data, n, k, distances, labels, vectors, params)),
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
   * The parts of this index's trained state as [name, float count] (e.g. coarse centroids,
   * PQ codebooks, SQ ranges, transform matrices), or null when its training cannot be
   * shared (see native/trained_state.h). Fixed by the index's structure, trained or not.
   */
  get trainedLayout(): TrainedLayout | null {
    try {
      return this.raw.trainedLayout();
    } catch {
      return null;
    }
  }

  /** The trained state, parts back to back in trainedLayout order (a trained index only). */
  async exportTrained(): Promise<TrainedState> {
    const layout = this.trainedLayout;
    if (!layout) throw new ValidationError('index', 'an index type whose training can be shared', this.description);
    const data = new Float32Array(layout.reduce((a, [, n]) => a + n, 0));
    await this.lock.read(() => wrap(this.raw.exportTrained(data)));
    return { layout, data };
  }

  /**
   * Trains this (untrained) index with another index's exported state. The layout must be
   * this index's own, name for name and length for length, and every value finite: only
   * numbers that fit this index's own structure are installed.
   */
  async installTrainedState(state: TrainedState): Promise<void> {
    const mine = this.trainedLayout;
    if (!mine) throw new ValidationError('index', 'an index type whose training can be shared', this.description);
    const want = mine.map(([n, l]) => `${n}:${l}`).join(',');
    const got = Array.isArray(state.layout) ? state.layout.map((p) => (Array.isArray(p) ? `${p[0]}:${p[1]}` : '?')).join(',') : '?';
    if (want !== got) throw new ValidationError('layout', `this index's trained-state layout [${want}]`, `[${got}]`);
    const total = mine.reduce((a, [, n]) => a + n, 0);
    if (!(state.data instanceof Float32Array) || state.data.length !== total) {
      throw new ValidationError('state', `${total} float32 values`, state.data instanceof Float32Array ? `${state.data.length} values` : state.data);
    }
    for (let i = 0; i < total; i++) {
      const v = state.data[i]!;
      if (v - v !== 0) throw new ValidationError(`state[${i}]`, 'a finite number', v);
    }
    this.fingerprint = undefined;
    await this.lock.write(() => wrap(this.raw.installTrainedState(state.data)));
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

  /**
   * OpenMP threads for this index's later FAISS calls (0: the process-wide setOmpNumThreads).
   * Lets several servers in one process (ranks of a multi-rank `dfaiss server`) each keep
   * their own thread count. A clone keeps it.
   */
  setThreads(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0 || n > 1024) throw new ValidationError('threads', 'an integer from 0 to 1024', n);
    this.raw.setThreads(n);
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
/** Probe lists fit n queries of an index with `nlist` lists: shape n x nprobe, list ids in [0, nlist) (or -1, none). */
export function checkProbeLists(p: ProbeLists, n: number, nlist: number): void {
  if (!Number.isSafeInteger(p.nprobe) || p.nprobe < 1 || p.nprobe > Math.max(1, nlist)) throw new ValidationError('nprobe', `a probe count from 1 to nlist=${nlist}`, p.nprobe);
  if (!(p.assign instanceof BigInt64Array) || p.assign.length !== n * p.nprobe) throw new ValidationError('assign', `a BigInt64Array of n x nprobe = ${n} x ${p.nprobe} list ids`, p.assign);
  if (!(p.coarse instanceof Float32Array) || p.coarse.length !== n * p.nprobe) throw new ValidationError('coarse', `a Float32Array of n x nprobe = ${n} x ${p.nprobe} coarse distances`, p.coarse);
  // As 32-bit halves (little-endian), which is ~10x faster than BigInt compares: every shard checks them.
  const words = new Int32Array(p.assign.buffer, p.assign.byteOffset, p.assign.length * 2);
  for (let i = 0; i < p.assign.length; i++) {
    const lo = words[2 * i]!;
    const hi = words[2 * i + 1]!;
    if (!((hi === 0 && lo >= 0 && lo < nlist) || (hi === -1 && lo === -1))) throw new ValidationError(`assign[${i}]`, `a list id in [0, ${nlist}) or -1`, p.assign[i]);
  }
  for (let i = 0; i < p.coarse.length; i++) {
    if (!Number.isFinite(p.coarse[i]!) && p.assign[i]! >= 0n) throw new ValidationError(`coarse[${i}]`, 'a finite coarse distance', p.coarse[i]);
  }
}

function cleanFaissMessage(msg: string): string {
  const m = /^Error in .*? at \S+:\d+: (.*)$/s.exec(msg);
  return m ? `${m[1]!.trim()} (FAISS)` : msg;
}
