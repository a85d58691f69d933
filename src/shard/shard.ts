/**
 * One shard: the part of one logical index that lives on one server.
 *
 * Life cycle as in the original (NOT_TRAINED -> TRAINING -> TRAINED, ADD while buffered
 * vectors are being added), with two differences: training and adding always run in the
 * background, off the event loop, and searches keep answering in every state with what
 * is already indexed (the original refused to search during ADD).
 *
 * Shared training (trainMode 'shared', for index types whose trained state is plain arrays:
 * see FaissIndex.trainedLayout): the shard never trains on its own. A client trains once on
 * one server, on a sample drawn across shards (trainShared), and every other shard installs
 * that state (installTrained).
 *
 * Ids: every vector gets an internal id in arrival order (its metadata's position). The
 * background adder appends to FAISS in that same order, so FAISS ids equal internal ids.
 */
import { checkSearchParameter, createFaissIndex, createStandInIndex, type CallSearchParams, type IndexCfg } from '../config/index.js';
import { FaissError, IndexStateError, ValidationError } from '../errors.js';
import { FaissIndex, MAX_K, scheduleMemoryTrim, trimMemory, type TrainedState } from '../native/index.js';
import { prng } from '../util/random.js';
import { InMemoryMetadataStore, type MetadataStore } from './metadata-store.js';
import { Records, type RecordId } from './records.js';
import * as recordOps from './shard-records.js';
import { IndexState } from './state.js';

/** Largest chunk the background adder hands FAISS at once: an add holds the index's write
 * lock, so smaller chunks let searches in between. */
const MAX_ADD_CHUNK = 16384;
/**
 * Searches estimated below this many multiply-adds (~0.3 ms) run on the event loop: the
 * hop to a worker thread and back costs two wake-ups, each waiting for a core when
 * several servers share a machine (IVF batch-1 queries are ~0.4M here; a Flat shard of
 * 125k x 128 is 16M and goes to a worker).
 */
const INLINE_SEARCH_WORK = 1 << 21;
/** Largest shared-training sample a trainer stages (float32 values: 4 GiB). */
const MAX_SAMPLE_VALUES = 2 ** 30;
/** Batches at least this large go to FAISS as they are (no concatenation copy). */
const SOLO_ROWS = 1024;

export interface ShardSearchResult {
  n: number;
  k: number;
  distances: Float32Array;
  labels: BigInt64Array;
  vectors?: Float32Array;
}

export interface ShardInfo {
  state: IndexState;
  /** Vectors searchable in FAISS (tombstoned ones excluded). */
  ntotal: number;
  /** Vectors received but not yet in FAISS (tombstoned ones excluded). */
  buffered: number;
  /** All live vectors received (ntotal + buffered, once a running add chunk is accounted). */
  total: number;
  /** Vectors tombstoned because their batch was revoked (still stored, never returned). */
  tombstoned: number;
  /** Live records with ids (null: this shard stores vectors without ids, or nothing yet). */
  records: number | null;
  /** The shard stores records with ids (true), vectors without (false), or nothing yet (null). */
  withIds: boolean | null;
  /** Internal ids deleted or replaced (never returned again). */
  deleted: number;
  /** Deleted vectors still in FAISS, waiting for the background compaction. */
  awaitingCompaction: number;
  /** Vectors FAISS holds (live ones plus those awaiting compaction and revoked ones). */
  faissNtotal: number;
  compactions: { count: number; removed: number; ms: number; lastMs: number };
  metric: IndexCfg['metric'];
  dim: number;
  /** The client trains this index once for all shards (trainMode 'shared' on a type that needs training). */
  sharedTraining: boolean;
  /** Buffered vectors that start training (per shard, or across shards with shared training). */
  trainNum: number;
  /** Share of the buffer trained on when trainNum is 0. */
  trainRatio: number;
}

export interface ShardOptions {
  metadata?: MetadataStore;
  /**
   * The trained state comes from the cluster (trainMode 'shared' on an index type whose
   * trained state can be shared): reaching trainNum does not start training here. @default false
   */
  sharedTraining?: boolean;
  /** Training starts on the first `rows` buffered vectors (the durable layer logs this). */
  onTrainingStart?: (rows: number) => void;
  /** Training finished and the index is in place (the durable layer snapshots it). */
  onTrained?: () => void;
  /** Called with background failures (training or adding), which have no caller to reject. */
  onError?: (err: Error) => void;
}

export class Shard {
  readonly cfg: IndexCfg;
  readonly metadata: MetadataStore;
  readonly sharedTraining: boolean;
  /** The trained state this shard was trained with (shared training only). */
  private sharedState: SharedTrained | null = null;
  private sharedJob: Promise<SharedTrained> | null = null;
  /** The cluster's training sample being staged here in chunks (this shard is the trainer). */
  private staged: { id: string; data: Float32Array } | null = null;
  private index: FaissIndex | null = null;
  /** FAISS threads of this shard's index (0: the process-wide count); see setThreads. */
  private threads = 0;
  private stateValue: IndexState = IndexState.NOT_TRAINED;
  /** Received vectors not yet handed to FAISS, oldest first. */
  private pending: PendingBatch[] = [];
  private pendingCount = 0;
  /** Snapshots reading pending batches; releases wait until they are done. */
  private pins = 0;
  private deferredReleases: Array<() => void> = [];
  private training: Promise<void> | null = null;
  private adding: Promise<void> | null = null;
  /** Parameters to (re)apply to every FAISS index this shard builds, e.g. nprobe. */
  private readonly params = new Map<string, number>();
  private readonly onError: (err: Error) => void;
  private readonly hooks: Pick<ShardOptions, 'onTrainingStart' | 'onTrained'>;
  private lastError: Error | null = null;
  /** quiesce() holders; the adder waits between chunks while > 0. */
  private paused = 0;
  private parked: (() => void) | null = null;
  private chunkInFlight: Promise<void> | null = null;
  private closed = false;
  /**
   * Id ranges [first, first + n) of revoked batches, sorted by first, disjoint. FAISS keeps
   * the vectors (Flat's remove_ids renumbers ids, which would break id -> metadata; HNSW
   * cannot remove at all); search skips them instead. Revocations are rare.
   */
  private tombs: Array<[number, number]> = [];
  private tombCount = 0;
  /** Ids, deletes, replacements and compaction bookkeeping (see records.ts). */
  records = new Records();
  /** Callers waiting until the internal ids below a mark are in FAISS (upsert replies). */
  private indexWaiters: Array<{ upTo: number; resolve: () => void }> = [];
  /** The running compaction, if any (see compact). */
  compacting: Promise<number> | null = null;
  /** Compactions done: how many, vectors removed, milliseconds FAISS spent in remove_ids (for the bench). */
  readonly compactions = { count: 0, removed: 0, ms: 0, lastMs: 0 };

  constructor(cfg: IndexCfg, opts: ShardOptions = {}) {
    this.cfg = cfg;
    this.metadata = opts.metadata ?? new InMemoryMetadataStore();
    this.sharedTraining = opts.sharedTraining ?? false;
    this.onError = opts.onError ?? (() => {});
    this.hooks = { onTrainingStart: opts.onTrainingStart, onTrained: opts.onTrained };
  }

  /** Rebuilds a shard around an existing index (loaded from disk). */
  static fromIndex(cfg: IndexCfg, index: FaissIndex, opts: ShardOptions = {}): Shard {
    const shard = new Shard(cfg, opts);
    shard.adopt(index);
    shard.stateValue = IndexState.TRAINED;
    return shard;
  }

  get state(): IndexState {
    return this.stateValue;
  }

  /** OpenMP threads for this shard's FAISS calls, now and for every index it trains or installs later. */
  setThreads(n: number): void {
    this.index?.setThreads(n);
    this.threads = n;
  }

  /** Makes `index` this shard's index, with the shard's thread count. */
  private adopt(index: FaissIndex): void {
    index.setThreads(this.threads);
    this.index = index;
  }

  /**
   * Index types FAISS builds trained (Flat, IDMap,Flat, HNSW-Flat, ...) need no training:
   * with trainNum 0 (the default) the shard gets its index now and is TRAINED from creation,
   * so it is searchable after its first add and syncTrain is a no-op. A trainNum > 0 keeps
   * the original's rule (buffered until trainNum vectors arrive). Returns whether it did.
   */
  async useIndexIfTrainedAtConstruction(): Promise<boolean> {
    if (this.cfg.trainNum > 0 || this.index || this.training || this.sharedTraining || this.stateValue !== IndexState.NOT_TRAINED) return false;
    if (!(await createStandInIndex(this.cfg)).isTrained) return false;
    const index = await createFaissIndex(this.cfg, 0, { totalVectors: 0 });
    for (const [name, value] of this.params) await index.setParameter(name, value);
    if (this.index || this.training) return false; // trained meanwhile
    this.adopt(index);
    this.stateValue = IndexState.TRAINED;
    return true;
  }

  get info(): ShardInfo {
    // From the JS bookkeeping, not FAISS's ntotal: that grows on a worker thread a moment
    // before the buffer bookkeeping catches up, and shrinks when dead vectors are compacted.
    const indexed = this.index ? this.indexedUpTo : 0;
    const deadIndexed = this.tombstonedBelow(indexed);
    const r = this.records;
    return {
      state: this.stateValue,
      ntotal: indexed - deadIndexed - r.deadIndexed,
      buffered: Math.max(0, this.pendingCount - (this.tombCount - deadIndexed) - (r.deadTotal - r.deadIndexed)),
      total: this.metadata.size - this.tombCount - r.deadTotal - r.replacing,
      tombstoned: this.tombCount,
      records: r.mode === 'ids' ? r.size : null,
      withIds: r.mode === null ? null : r.mode === 'ids',
      deleted: r.deadTotal,
      awaitingCompaction: r.toRemove.length,
      faissNtotal: this.index?.ntotal ?? 0,
      compactions: { ...this.compactions },
      metric: this.cfg.metric,
      dim: this.cfg.dim,
      sharedTraining: this.sharedTraining,
      trainNum: this.cfg.trainNum,
      trainRatio: this.cfg.trainRatio,
    };
  }

  /** Hides ids [first, first + n) from searches and counts for good (a revoked batch). */
  tombstone(first: number, n: number): void {
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(n) || first < 0 || n <= 0 || first + n > this.metadata.size) {
      throw new ValidationError('tombstone', `an id range within the ${this.metadata.size} stored ids`, `[${first}, ${first + n})`);
    }
    let i = this.tombs.length;
    while (i > 0 && this.tombs[i - 1]![0] > first) i--;
    const prev = this.tombs[i - 1];
    const next = this.tombs[i];
    // Each key covers its own ids and is revoked once, so ranges never overlap; guard anyway.
    if ((prev && prev[0] + prev[1] > first) || (next && first + n > next[0])) return;
    this.tombs.splice(i, 0, [first, n]);
    this.tombCount += n;
    this.records.revoked(first, n);
  }

  /** True when `id` belongs to a revoked batch. */
  isTombstoned(id: number): boolean {
    let lo = 0;
    let hi = this.tombs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const [first, n] = this.tombs[mid]!;
      if (id < first) hi = mid - 1;
      else if (id >= first + n) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** Tombstoned id ranges (for snapshots). */
  tombstones(): Array<[number, number]> {
    return this.tombs.map(([f, n]) => [f, n]);
  }

  /** Tombstoned ids below `limit`. */
  private tombstonedBelow(limit: number): number {
    let dead = 0;
    for (const [first, n] of this.tombs) {
      if (first >= limit) break;
      dead += Math.min(n, limit - first);
    }
    return dead;
  }

  /** The last background failure, if any (training or adding). */
  get error(): Error | null {
    return this.lastError;
  }

  /** The FAISS index once trained (null before). */
  get faissIndex(): FaissIndex | null {
    return this.index;
  }

  /** Puts vectors read from a snapshot back into the buffer (they already have metadata). */
  restorePending(vectors: Float32Array): void {
    this.pending.push({ vectors });
    this.pendingCount += vectors.length / this.cfg.dim;
  }

  /** Vectors not yet in FAISS, oldest first (for snapshots: pin them while they are read). */
  pendingVectors(): Float32Array[] {
    return this.pending.map((b) => b.vectors);
  }

  /**
   * Keeps the memory of today's pending batches valid (no buffer goes back to its pool)
   * until the returned function is called: a snapshot writes them after the cut.
   */
  pinPending(): () => void {
    this.pins++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.pins === 0) {
        const run = this.deferredReleases;
        this.deferredReleases = [];
        for (const r of run) r();
      }
    };
  }

  /**
   * Accepts a batch: `vectors` (n*dim, owned by the shard from now on) and its packed
   * metadata. Returns the internal id of the first vector. Training or a background add
   * starts as the original's rules say; `trainAsync: false` awaits a triggered training.
   * `release` (owned by the shard from now on) is called once FAISS holds the vectors:
   * they may live in a request's receive buffer, handed to FAISS without a copy.
   */
  async add(
    vectors: Float32Array,
    blob: Uint8Array,
    offsets: Uint32Array,
    opts: { trainAsync?: boolean; replay?: boolean; release?: () => void; ids?: readonly RecordId[] } = {},
  ): Promise<number> {
    try {
      this.checkOpen();
    } catch (err) {
      opts.release?.();
      throw err;
    }
    const n = vectors.length / this.cfg.dim;
    const first = this.metadata.append(blob, offsets);
    if (opts.ids) this.records.put(first, opts.ids);
    else this.records.putAnonymous();
    this.pending.push({ vectors, release: opts.release });
    this.pendingCount += n;
    if (opts.replay) return first; // restore: resume() starts training/adding once everything is back
    if (this.stateValue === IndexState.NOT_TRAINED) {
      if (!this.sharedTraining && this.cfg.trainNum > 0 && this.pendingCount >= this.cfg.trainNum) {
        // A training failure is kept in `error` and reported through onError; it must not
        // become an unhandled rejection (which would end the server process), nor fail this
        // add: the batch is stored either way, and a failed add would invite a duplicate retry.
        const t = this.startTraining().catch(() => {});
        if (opts.trainAsync === false) await t;
      }
    } else if (this.stateValue !== IndexState.TRAINING) {
      this.drainPending();
    }
    return first;
  }

  /** After a restore: trains if the buffer reached trainNum, or adds the buffer to a trained index. */
  resume(opts: { trainOnRows?: number } = {}): void {
    if (this.stateValue === IndexState.NOT_TRAINED) {
      // Training had started before the restart: redo it on the same rows (same sample, same seed).
      if (this.sharedTraining) return; // the client trains the cluster (again)
      if (opts.trainOnRows) this.startTraining(opts.trainOnRows).catch(() => {});
      else if (this.cfg.trainNum > 0 && this.pendingCount >= this.cfg.trainNum) this.startTraining().catch(() => {});
    } else {
      this.drainPending();
    }
  }

  /**
   * Runs `cut` synchronously at a moment when FAISS, the buffer and the metadata agree:
   * no background add chunk is in progress (the adder parks between chunks meanwhile).
   * Anything `cut` starts synchronously on the index (e.g. writeFile's read lock) is
   * ordered before the adder's next chunk.
   */
  /** Ends one quiesce (or compaction) pause; the last one wakes the parked adder. */
  private unpause(): void {
    this.paused--;
    if (this.paused === 0) {
      const wake = this.parked;
      this.parked = null;
      wake?.();
    }
  }

  async quiesce<T>(cut: () => T): Promise<T> {
    this.paused++;
    try {
      while (this.chunkInFlight) await this.chunkInFlight;
      return cut();
    } finally {
      this.unpause();
    }
  }

  /**
   * Trains now on the buffered vectors and waits until training is done (adds continue in
   * the background). False when there is nothing to train on: a shard that holds no vectors
   * trains once it reaches trainNum (or on the next syncTrain); the client decides whether
   * the cluster as a whole had nothing.
   */
  async syncTrain(): Promise<boolean> {
    this.checkOpen();
    if (!this.index && !this.training && this.pendingCount === 0) return false;
    await this.startTraining();
    return true;
  }

  /** Starts training in the background and returns at once. */
  asyncTrain(): void {
    this.checkOpen();
    this.startTraining().catch(() => {});
  }

  /** Up to `count` buffered vectors picked at random (seeded): this shard's part of a shared training sample. */
  sample(count: number, offset = 0, of = this.pendingCount): Float32Array {
    this.checkOpen();
    if (!Number.isSafeInteger(count) || count < 0) throw new ValidationError('count', 'a non-negative integer', count);
    // The sample order is over the first `of` rows (fixed by the caller across chunked
    // calls; an untrained buffer only grows), so chunks never repeat or skip a row.
    const total = Math.min(of, this.pendingCount);
    const from = Math.min(offset, total);
    return this.sampleRows(Math.min(count, total - from), total, from);
  }

  /**
   * Shared training, on the trainer: copies one chunk of the cluster's training sample
   * (rows [offset, offset + n) of `total`) into a staged buffer. A new sampleId replaces
   * the staged sample (a client that died half-way left it; the next one starts over).
   */
  stageSample(sampleId: string, offset: number, total: number, rows: Float32Array): void {
    this.checkOpen();
    const { dim } = this.cfg;
    if (total * dim > MAX_SAMPLE_VALUES) throw new ValidationError('total', `a training sample of at most ${Math.floor(MAX_SAMPLE_VALUES / dim)} rows of dim ${dim} (4 GiB)`, total);
    if (this.staged?.id !== sampleId) this.staged = { id: sampleId, data: new Float32Array(total * dim) };
    const { data } = this.staged;
    if (data.length !== total * dim || offset * dim + rows.length > data.length) {
      throw new ValidationError('offset', `rows within the staged sample of ${data.length / dim} rows`, `[${offset}, ${offset + rows.length / dim}) of ${total}`);
    }
    data.set(rows, offset * dim);
  }

  /** The staged sample `sampleId`, with this shard's own share filled in, for trainShared (and no longer staged). */
  stagedSample(sampleId: string, total: number, own: { offset: number; count: number; of: number }): Float32Array {
    this.checkOpen();
    let data: Float32Array;
    if (this.staged?.id === sampleId) data = this.staged.data;
    else if (own.count === total && own.offset === 0 && total * this.cfg.dim <= MAX_SAMPLE_VALUES) data = new Float32Array(total * this.cfg.dim); // the whole sample is this shard's
    else throw new IndexStateError(`no training sample '${sampleId}' is staged here (another client's training replaced it, or the server restarted): train again`);
    this.staged = null;
    const mine = this.sample(own.count, 0, own.of);
    if (own.offset * this.cfg.dim + mine.length > data.length) throw new ValidationError('own.offset', 'a share inside the staged sample', own.offset);
    data.set(mine, own.offset * this.cfg.dim);
    return data;
  }

  /**
   * Shared training on this shard (the one the client picked): trains a new index on
   * `sample` (drawn across all shards; this shard's own buffer when empty), installs it here
   * and returns its trained state (coarse centroids, PQ codebooks, SQ ranges, transform
   * matrices: plain numbers, see FaissIndex.exportTrained) for the other shards to install.
   * Concurrent and later calls get the same state.
   */
  trainShared(sample: Float32Array, opts: SharedTrainingOptions = {}): Promise<SharedTrained> {
    this.checkOpen();
    if (this.sharedState) return Promise.resolve(this.sharedState);
    this.sharedJob ??= this.runSharedTraining(sample, opts).finally(() => {
      this.sharedJob = null;
    });
    return this.sharedJob;
  }

  private async runSharedTraining(sample: Float32Array, opts: SharedTrainingOptions): Promise<SharedTrained> {
    await this.training?.catch(() => {}); // a local training (syncTrain) already running: use its result
    if (this.index) {
      // Trained before without a shared state (per-shard training, or an old snapshot).
      this.sharedState = { nlist: this.index.nlist, ...(await this.index.exportTrained()) };
      return this.sharedState;
    }
    const { dim } = this.cfg;
    if (sample.length === 0 && this.pendingCount === 0) throw new IndexStateError('no vectors to train on: add data before training');
    const rows = sample.length > 0 ? sample : this.sampleRows(this.wantedTrainRows(this.pendingCount), this.pendingCount);
    const n = rows.length / dim;
    this.stateValue = IndexState.TRAINING;
    try {
      const index = await createFaissIndex(this.cfg, n, { totalVectors: n });
      if (!index.isTrained) await index.train(rows, { threads: opts.threads });
      opts.sampleDone?.(); // the sample's memory can go before this shard's adds start
      // k-means freed its buffers in the arenas of the threads it ran on; the adds that come
      // next allocate elsewhere, so hand that memory back first (measured: ~30 MiB of peak).
      await trimMemory();
      for (const [name, value] of this.params) await index.setParameter(name, value);
      const state: SharedTrained = { nlist: index.nlist, ...(await index.exportTrained()) };
      this.install(index, state);
      return state;
    } catch (err) {
      if (!this.index) this.stateValue = IndexState.NOT_TRAINED;
      this.lastError = err as Error;
      throw err;
    }
  }

  /**
   * Trains this shard with the state another shard's shared training produced. Returns
   * false when this shard has an index already (a repeated or late install). Only numbers
   * cross the wire: the index is built here from this shard's cfg (with the trainer's nlist,
   * which it may have inferred from its sample size), and the state must fit its layout.
   */
  async installTrained(state: SharedTrained): Promise<boolean> {
    this.checkOpen();
    if (this.index || this.training || this.sharedJob) return false;
    if (!Number.isSafeInteger(state.nlist) || state.nlist === 0 || state.nlist < -1 || state.nlist > 1 << 24) {
      throw new ValidationError('nlist', 'the trainer\'s list count (1 to 2^24, or -1 for an index without lists)', state.nlist);
    }
    const cfg = state.nlist > 0 ? { ...this.cfg, centroids: state.nlist, inferCentroids: false } : this.cfg;
    // Built, not trained, here: the training-set size checks do not apply (the trainer passed them).
    const built = 1 << 24;
    const index = await createFaissIndex(cfg, built, { totalVectors: built });
    await index.installTrainedState(state);
    for (const [name, value] of this.params) await index.setParameter(name, value);
    if (this.index || this.training || this.sharedJob) return false; // another install won meanwhile
    this.install(index, state);
    return true;
  }

  private install(index: FaissIndex, state: SharedTrained): void {
    this.adopt(index);
    this.sharedState = state;
    this.stateValue = IndexState.TRAINED;
    this.drainPending();
    this.hooks.onTrained?.();
  }

  /** Adds whatever is buffered (trained shards only); resolves once it is in FAISS. */
  async addBufferToIndex(): Promise<void> {
    this.checkOpen();
    if (!this.index) throw new IndexStateError(`index is ${this.stateValue}: train it (syncTrain) before adding its buffer`);
    this.drainPending();
    await this.idle();
  }

  /** Resolves when no training or background add is running. */
  async idle(): Promise<void> {
    while (this.training || this.adding || this.compacting) {
      await Promise.allSettled([this.training, this.adding, this.compacting]);
    }
  }

  /** Searches what is indexed so far; an untrained shard answers with no hits (ids -1). */
  async search(queries: Float32Array, k: number, withVectors: boolean, params?: CallSearchParams): Promise<ShardSearchResult> {
    const n = queries.length / this.cfg.dim;
    const index = this.index;
    // An empty index answers in the binding, under its lock: an add in flight is waited for.
    if (!index) return this.noHits(n, k, withVectors);
    // Hidden vectors are judged when the search completes: an upsert's old version dies in
    // the tick its new one enters FAISS, which may fall between issuing a search and its
    // answer. So the fast path (nothing hidden) is only trusted when that is still true after.
    if (this.hiddenInFaiss() === 0 && !this.records.remap) {
      let r: ShardSearchResult | null = null;
      if (withVectors) r = await index.searchAndReconstruct(queries, k, params);
      else if (searchWork(index, n, params?.nprobe) <= INLINE_SEARCH_WORK) r = index.searchInline(queries, k, params);
      r ??= await index.search(queries, k, params);
      if (this.hiddenInFaiss() === 0 && !this.records.remap) return r;
    }
    // Over-fetch by the hidden count so k live hits survive the filter (capped at MAX_K:
    // beyond that a query may get fewer than k). More may die while a search runs: then
    // it runs again with the new count (bounded).
    for (let attempt = 0; ; attempt++) {
      const kk = Math.min(MAX_K, k + this.hiddenInFaiss());
      const r: { distances: Float32Array; labels: BigInt64Array; vectors?: Float32Array } = withVectors
        ? await index.searchAndReconstruct(queries, kk, params)
        : await index.search(queries, kk, params);
      const { out, short } = this.filterHits(r, n, k, kk, withVectors);
      if (!short || kk >= MAX_K || attempt >= 3) return out;
    }
  }

  /** Vectors in FAISS that searches must skip (revoked, deleted, replaced and not yet compacted). */
  private hiddenInFaiss(): number {
    return this.tombstonedBelow(this.indexedUpTo) + this.records.toRemove.length;
  }

  /**
   * The live hits of an over-fetched search, translated to internal ids. `short`: some
   * query got fewer than k although FAISS filled all kk slots (more may exist deeper).
   */
  private filterHits(r: { distances: Float32Array; labels: BigInt64Array; vectors?: Float32Array }, n: number, k: number, kk: number, withVectors: boolean): { out: ShardSearchResult; short: boolean } {
    const out = this.noHits(n, k, withVectors);
    const { dim } = this.cfg;
    let short = false;
    for (let q = 0; q < n; q++) {
      let j = 0;
      let i = 0;
      for (; i < kk && j < k; i++) {
        const label = r.labels[q * kk + i]!;
        if (label < 0n) continue;
        // FAISS label -> internal id (they differ once a Flat index was compacted)
        const id = this.records.internalOf(Number(label));
        if (this.isHidden(id)) continue;
        out.distances[q * k + j] = r.distances[q * kk + i]!;
        out.labels[q * k + j] = BigInt(id);
        if (withVectors) out.vectors!.set(r.vectors!.subarray((q * kk + i) * dim, (q * kk + i + 1) * dim), (q * k + j) * dim);
        j++;
      }
      if (j < k && kk > k && r.labels[q * kk + kk - 1]! >= 0n) short = true;
    }
    return { out, short };
  }

  /** Internal ids below this are in FAISS (or were compacted out of it); the rest are buffered. */
  get indexedUpTo(): number {
    return this.metadata.size - this.pendingCount;
  }

  /** True when internal id `id` is never returned: its batch was revoked, or it was deleted or replaced. */
  isHidden(id: number): boolean {
    return this.records.isDead(id) || (this.tombs.length > 0 && this.isTombstoned(id));
  }

  /** Resolves once internal ids below `upTo` are in FAISS, or at once when nothing is adding them (untrained, or failed). */
  whenIndexed(upTo: number): Promise<void> {
    if (!this.index || this.indexedUpTo >= upTo || (!this.adding && this.pendingCount === 0)) return Promise.resolve();
    return new Promise((resolve) => this.indexWaiters.push({ upTo, resolve }));
  }

  private wakeIndexWaiters(all: boolean): void {
    if (this.indexWaiters.length === 0) return;
    const mark = this.indexedUpTo;
    const keep = [];
    for (const w of this.indexWaiters) {
      if (all || w.upTo <= mark) w.resolve();
      else keep.push(w);
    }
    this.indexWaiters = keep;
  }

  /** Buffered vectors (not yet in FAISS), oldest first, with the internal id of each batch's first row. */
  pendingBatches(): Array<{ first: number; vectors: Float32Array }> {
    let first = this.indexedUpTo;
    return this.pending.map((b) => {
      const out = { first, vectors: b.vectors };
      first += b.vectors.length / this.cfg.dim;
      return out;
    });
  }

  /**
   * Runs `job` (a FAISS write that must not interleave with the background adder, e.g. a
   * compaction) between two add chunks: the adder parks meanwhile, and snapshots wait for it.
   */
  async betweenChunks<T>(job: () => Promise<T>): Promise<T> {
    this.paused++;
    try {
      while (this.chunkInFlight) await this.chunkInFlight;
      const p = job();
      this.chunkInFlight = p.then(
        () => {},
        () => {},
      );
      try {
        return await p;
      } finally {
        this.chunkInFlight = null;
      }
    } finally {
      this.unpause();
    }
  }

  /** Reports a failure of background work (e.g. a compaction) that has no caller. */
  backgroundError(err: Error): void {
    this.lastError = err;
    this.onError(err);
  }

  /** True once close() was called. */
  get isClosed(): boolean {
    return this.closed;
  }

  private noHits(n: number, k: number, withVectors: boolean): ShardSearchResult {
    const distances = new Float32Array(n * k).fill(this.cfg.metric === 'l2' ? Infinity : -Infinity);
    return { n, k, distances, labels: new BigInt64Array(n * k).fill(-1n), ...(withVectors ? { vectors: new Float32Array(n * k * this.cfg.dim) } : {}) };
  }

  /** Sets a FAISS search parameter now and on any index trained later. */
  async setParameter(name: string, value: number): Promise<void> {
    // Checked against the table first (FAISS casts and accepts nprobe 0 or 1e12, then every
    // search fails an assertion); a trained index bounds nprobe by its real list count.
    const nlist = this.index?.nlist;
    checkSearchParameter(this.cfg, name, value, nlist !== undefined && nlist > 0 ? { nlist } : {});
    // The original's hnswsq builder searches with efSearch = nprobe; keep setNprobe meaningful there.
    if (name === 'nprobe' && this.cfg.indexBuilderType === 'hnswsq') name = 'efSearch';
    // Before training, try it on a stand-in index of the same type: a parameter this index
    // type does not have must fail now, not make every later training fail.
    try {
      await (this.index ?? (await createStandInIndex(this.cfg))).setParameter(name, value);
    } catch (err) {
      // A factory string the table does not know: FAISS's refusal, as the same error kind.
      if (err instanceof FaissError && /could not set parameter/.test(err.message)) {
        throw new ValidationError('name', `a search parameter this index type has (FAISS: ${err.message})`, name);
      }
      throw err;
    }
    this.params.set(name, value);
  }

  async centroids(): Promise<{ nlist: number; dim: number; data: Float32Array }> {
    if (!this.index) throw new IndexStateError(`index is ${this.stateValue}: centroids exist only after training`);
    return this.index.centroids();
  }

  /** Stops accepting work and waits for background jobs; the shard is unusable afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    await this.idle();
  }

  private checkOpen(): void {
    if (this.closed) throw new IndexStateError('index was dropped or is being reloaded; create or load it again');
  }

  private startTraining(rows?: number): Promise<void> {
    if (this.training) return this.training;
    if (this.index) return Promise.resolve();
    if (this.pendingCount === 0) {
      return Promise.reject(new IndexStateError('no vectors to train on: add data before training'));
    }
    this.stateValue = IndexState.TRAINING;
    const trainRows = Math.min(rows ?? this.pendingCount, this.pendingCount);
    this.hooks.onTrainingStart?.(trainRows);
    const job = this.train(trainRows).then(
      () => {
        this.training = null;
        this.stateValue = IndexState.TRAINED;
        this.drainPending();
        this.hooks.onTrained?.();
      },
      (err: Error) => {
        this.training = null;
        this.stateValue = IndexState.NOT_TRAINED;
        this.lastError = err;
        this.onError(err);
        throw err;
      },
    );
    this.training = job;
    return job;
  }

  /** Trains on a sample of the first `total` buffered rows. */
  private async train(total: number): Promise<void> {
    const wanted = this.wantedTrainRows(total);
    const sample = this.sampleRows(wanted, total);
    const index = await createFaissIndex(this.cfg, wanted, { totalVectors: total });
    index.setThreads(this.threads);
    if (!index.isTrained) {
      await index.train(sample);
      await trimMemory(); // as in runSharedTraining
    }
    for (const [name, value] of this.params) await index.setParameter(name, value);
    this.adopt(index);
  }

  /** Training set size for `total` available rows: trainNum, else trainRatio of them. */
  private wantedTrainRows(total: number): number {
    const { trainNum, trainRatio } = this.cfg;
    return trainNum > 0 ? Math.min(trainNum, total) : Math.max(1, Math.floor(total * trainRatio));
  }

  /**
   * `count` buffered vectors picked uniformly at random among the first `total` (seeded:
   * retrains are reproducible), starting at position `offset` of that random order.
   */
  private sampleRows(count: number, total: number, offset = 0): Float32Array {
    const { dim } = this.cfg;
    const out = new Float32Array(count * dim);
    // Partial Fisher-Yates over row numbers; the batches are addressed through a prefix table.
    const rows = new Uint32Array(total);
    for (let i = 0; i < total; i++) rows[i] = i;
    const rand = prng(0x5eed);
    for (let i = 0; i < offset + count; i++) {
      const j = i + Math.floor(rand() * (total - i));
      const t = rows[i]!;
      rows[i] = rows[j]!;
      rows[j] = t;
    }
    const starts: number[] = [];
    let s = 0;
    for (const b of this.pending) {
      starts.push(s);
      s += b.vectors.length / dim;
    }
    for (let i = 0; i < count; i++) {
      const r = rows[offset + i]!;
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid]! <= r) lo = mid;
        else hi = mid - 1;
      }
      const off = (r - starts[lo]!) * dim;
      out.set(this.pending[lo]!.vectors.subarray(off, off + dim), i * dim);
    }
    return out;
  }

  /** Moves buffered vectors into FAISS in arrival order, in chunks, in the background. */
  private drainPending(): void {
    if (this.adding || this.pendingCount === 0 || !this.index) return;
    this.stateValue = IndexState.ADD;
    const index = this.index;
    const chunkRows = Math.max(1, Math.min(this.cfg.bufferBsz, MAX_ADD_CHUNK));
    const ivf = index.isIvf;
    const run = async (): Promise<void> => {
      if (ivf) await this.preassign(index);
      while (this.pending.length > 0) {
        if (this.paused > 0) {
          await new Promise<void>((resolve) => (this.parked = resolve));
          continue;
        }
        // Only the drain takes from the head of the buffer, so the chunk stays valid while
        // its lists are computed (under the shared lock: searches go on) or while parked.
        const chunk = this.takeChunk(chunkRows);
        const assign = ivf ? (chunk.assign ?? (await index.assign(chunk.vectors))) : undefined;
        while (this.paused > 0) await new Promise<void>((resolve) => (this.parked = resolve));
        // After a compaction an IVF index holds fewer vectors than ids handed out: FAISS
        // would number new vectors from its ntotal, so they get their internal ids explicitly.
        const from = this.indexedUpTo;
        const explicit = ivf && index.ntotal !== from ? recordOps.idRange(from, chunk.rows) : null;
        const add = explicit ? index.addWithIds(chunk.vectors, explicit) : assign ? index.addPreassigned(chunk.vectors, assign) : index.add(chunk.vectors);
        const job = add.then(() => {
          // FAISS, the buffer and the records change together, in the same tick.
          const at = this.indexedUpTo;
          this.pendingCount -= chunk.rows;
          this.records.indexed(at, at + chunk.rows);
          this.wakeIndexWaiters(false);
          const done = this.pending.splice(0, chunk.batches);
          if (chunk.rest) {
            // The rest still lives in the first batch's memory.
            this.pending.unshift(chunk.rest);
            done.pop();
          }
          for (const b of done) if (b.release) this.release(b.release);
        });
        this.chunkInFlight = job.then(
          () => {},
          () => {},
        );
        try {
          await job;
        } finally {
          this.chunkInFlight = null;
        }
      }
    };
    this.adding = run().then(
      () => {
        this.adding = null;
        if (this.stateValue === IndexState.ADD) this.stateValue = IndexState.TRAINED;
        this.wakeIndexWaiters(true);
        recordOps.scheduleCompaction(this);
        scheduleMemoryTrim();
      },
      (err: Error) => {
        // The index refused the data (e.g. out of memory): keep it buffered and report.
        this.adding = null;
        this.stateValue = IndexState.TRAINED;
        this.lastError = err;
        this.wakeIndexWaiters(true);
        this.onError(err);
      },
    );
  }

  /**
   * IVF: computes the lists of everything buffered now and sizes every inverted list once,
   * before the adds. Appending batch by batch grows each list by doubling, which left ~40 MiB
   * of slack and freed blocks per 125k x 128 shard (measured).
   */
  private async preassign(index: FaissIndex): Promise<void> {
    const counts = new Uint32Array(index.nlist);
    for (const b of this.pending.slice()) {
      b.assign ??= await index.assign(b.vectors);
      for (let i = 0; i < b.assign.length; i++) counts[Number(b.assign[i])]!++;
    }
    await index.reserveLists(counts);
  }

  private release(r: () => void): void {
    if (this.pins > 0) this.deferredReleases.push(r);
    else r();
  }

  /**
   * Up to `rows` of the oldest buffered rows as one matrix. The buffer itself changes only
   * after FAISS accepted the chunk, so a failed add loses nothing.
   */
  private takeChunk(rows: number): { vectors: Float32Array; assign?: BigInt64Array; rows: number; batches: number; rest: PendingBatch | null } {
    const { dim } = this.cfg;
    const first = this.pending[0]!;
    const firstRows = first.vectors.length / dim;
    if (firstRows >= rows || firstRows >= SOLO_ROWS) {
      rows = Math.min(rows, firstRows);
      const rest: PendingBatch | null =
        firstRows > rows ? { vectors: first.vectors.subarray(rows * dim), release: first.release, assign: first.assign?.subarray(rows) } : null;
      return { vectors: first.vectors.subarray(0, rows * dim), assign: first.assign?.subarray(0, rows), rows, batches: 1, rest };
    }
    let taken = 0;
    let batches = 0;
    const parts: PendingBatch[] = [];
    for (const b of this.pending) {
      const r = b.vectors.length / dim;
      if (taken + r > rows && taken > 0) break;
      parts.push(b);
      taken += r;
      batches++;
    }
    if (parts.length === 1) return { vectors: parts[0]!.vectors, assign: parts[0]!.assign, rows: taken, batches, rest: null };
    const vectors = new Float32Array(taken * dim);
    const assign = parts.every((p) => p.assign) ? new BigInt64Array(taken) : undefined;
    let off = 0;
    for (const p of parts) {
      vectors.set(p.vectors, off);
      assign?.set(p.assign!, off / dim);
      off += p.vectors.length;
    }
    return { vectors, assign, rows: taken, batches, rest: null };
  }
}

/** A shared training's result: the trainer's nlist (-1 without lists) and its trained state. */
export interface SharedTrained extends TrainedState {
  nlist: number;
}

export interface SharedTrainingOptions {
  /** Threads for this training (see FaissIndex.train). */
  threads?: number;
  /** Called once the sample is no longer needed (the training is done). */
  sampleDone?: () => void;
}

/** Vectors received and not yet in FAISS. */
interface PendingBatch {
  vectors: Float32Array;
  /** Returns their memory (a request's receive buffer) once FAISS has them. */
  release?: () => void;
  /** IVF: each vector's inverted list, computed ahead (see preassign). */
  assign?: BigInt64Array;
}

/** Checks a batch against the shard's dimension before anything is stored. */
export function checkBatch(cfg: IndexCfg, vectors: Float32Array | Uint16Array, n: number): void {
  if (!Number.isSafeInteger(n) || n <= 0) throw new ValidationError('n', 'a positive number of vectors (empty batches are refused)', n);
  if (vectors.length !== n * cfg.dim) {
    throw new ValidationError('vectors', `${n} x dim=${cfg.dim} = ${n * cfg.dim} values`, `${vectors.length} values`);
  }
}

/** Multiply-adds of a search, roughly: IVF scans the quantizer and nprobe average lists; others scan everything. */
function searchWork(index: FaissIndex, n: number, nprobe = index.nprobe): number {
  const nlist = index.nlist;
  const ntotal = index.ntotal;
  const perQuery = nlist > 0 ? nlist + Math.max(1, nprobe) * (ntotal / nlist) : ntotal;
  return n * perQuery * index.dim;
}
