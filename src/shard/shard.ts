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
 *
 * The parts: pending-buffer.ts (vectors not yet in FAISS), adder.ts (the background adder
 * and its pause gate), shard-training.ts (building and training the FAISS index),
 * tombstones.ts (revoked batches), shard-search.ts (search with hidden vectors skipped),
 * records.ts + shard-records.ts (records with ids). This class owns the state and the
 * life cycle that ties them together.
 */
import { checkSearchParameter, createFaissIndex, createStandInIndex, type CallSearchParams, type IndexCfg } from '../config/index.js';
import { FaissError, IndexStateError, ValidationError } from '../errors.js';
import { scheduleMemoryTrim, type FaissIndex } from '../native/index.js';
import { Adder } from './adder.js';
import { InMemoryMetadataStore, type MetadataStore } from './metadata-store.js';
import { PendingBuffer, type PendingVectors } from './pending-buffer.js';
import { Records, type RecordId } from './records.js';
import * as recordOps from './shard-records.js';
import { noHits, searchIndex, type HiddenView, type SharedProbes, type ShardSearchResult } from './shard-search.js';
import {
  StagedSample,
  applyParams,
  buildFromTrained,
  trainOwnIndex,
  trainSharedIndex,
  wantedTrainRows,
  type SharedTrained,
  type SharedTrainingOptions,
} from './shard-training.js';
import { IndexState } from './state.js';
import { Tombstones } from './tombstones.js';

export type { ShardSearchResult } from './shard-search.js';
export type { SharedTrained, SharedTrainingOptions } from './shard-training.js';

/** Largest chunk the background adder hands FAISS at once: an add holds the index's write
 * lock, so smaller chunks let searches in between. */
const MAX_ADD_CHUNK = 16384;

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
  /** Bytes the buffered vectors take (float16 kept as it arrived: 2 a value) and bytes of a training sample held here: what --max-buffered-mb counts. */
  bufferedBytes: number;
  sampleBytes: number;
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
  private readonly staged: StagedSample;
  /** Bytes of the sample a running training holds (see sampleBytes). */
  private trainingSampleBytes = 0;
  private index: FaissIndex | null = null;
  /** FAISS threads of this shard's index (0: the process-wide count); see setThreads. */
  private threads = 0;
  private stateValue: IndexState = IndexState.NOT_TRAINED;
  /** Received vectors not yet handed to FAISS, oldest first. */
  private readonly pending: PendingBuffer;
  private training: Promise<void> | null = null;
  private adding: Promise<void> | null = null;
  private readonly adder = new Adder();
  /** Parameters to (re)apply to every FAISS index this shard builds, e.g. nprobe. */
  private readonly params = new Map<string, number>();
  private readonly onError: (err: Error) => void;
  private readonly hooks: Pick<ShardOptions, 'onTrainingStart' | 'onTrained'>;
  private lastError: Error | null = null;
  private closed = false;
  /** Revoked batches: never returned, still in FAISS. */
  private readonly tombs = new Tombstones();
  /** Ids, deletes, replacements and compaction bookkeeping (see records.ts). */
  records = new Records();
  /** Callers waiting until the internal ids below a mark are in FAISS (upsert replies). */
  private indexWaiters: Array<{ upTo: number; resolve: () => void }> = [];
  /** The running compaction, if any (see compact). */
  compacting: Promise<number> | null = null;
  /** Compactions done: how many, vectors removed, milliseconds FAISS spent in remove_ids (for the bench). */
  readonly compactions = { count: 0, removed: 0, ms: 0, lastMs: 0 };
  /** What search needs to know of hidden vectors (read live: they change while a search runs). */
  private readonly hidden: HiddenView;

  constructor(cfg: IndexCfg, opts: ShardOptions = {}) {
    this.cfg = cfg;
    this.metadata = opts.metadata ?? new InMemoryMetadataStore();
    this.sharedTraining = opts.sharedTraining ?? false;
    this.onError = opts.onError ?? (() => {});
    this.hooks = { onTrainingStart: opts.onTrainingStart, onTrained: opts.onTrained };
    this.pending = new PendingBuffer(cfg.dim);
    this.staged = new StagedSample(cfg.dim);
    const records = (): Records => this.records;
    this.hidden = {
      hiddenInFaiss: () => this.hiddenInFaiss(),
      get remapped() {
        return records().remap !== null;
      },
      internalOf: (label) => this.records.internalOf(label),
      isHidden: (id) => this.isHidden(id),
    };
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
    await applyParams(index, this.params);
    if (this.index || this.training) return false; // trained meanwhile
    this.adopt(index);
    this.stateValue = IndexState.TRAINED;
    return true;
  }

  /** Bytes of vectors held outside FAISS (buffered for training, or not yet added; float16 kept as it arrived counts 2 per value). */
  get bufferedBytes(): number {
    return this.pending.bytes;
  }

  /**
   * Bytes of training sample held here: staged for a shared training, or being trained on.
   * The buffer bound counts them (a trainer holds its sample and its buffer at once).
   */
  get sampleBytes(): number {
    return this.staged.bytes + this.trainingSampleBytes;
  }

  /** info.ntotal without building the rest of info (every search reply carries it). */
  get ntotal(): number {
    const indexed = this.index ? this.indexedUpTo : 0;
    return indexed - this.tombs.below(indexed) - this.records.deadIndexed;
  }

  get info(): ShardInfo {
    // From the JS bookkeeping, not FAISS's ntotal: that grows on a worker thread a moment
    // before the buffer bookkeeping catches up, and shrinks when dead vectors are compacted.
    const indexed = this.index ? this.indexedUpTo : 0;
    const deadIndexed = this.tombs.below(indexed);
    const r = this.records;
    return {
      state: this.stateValue,
      ntotal: this.ntotal,
      buffered: Math.max(0, this.pending.count - (this.tombs.count - deadIndexed) - (r.deadTotal - r.deadIndexed)),
      total: this.metadata.size - this.tombs.count - r.deadTotal - r.replacing,
      tombstoned: this.tombs.count,
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
      bufferedBytes: this.pending.bytes,
      sampleBytes: this.sampleBytes,
    };
  }

  /** Hides ids [first, first + n) from searches and counts for good (a revoked batch). */
  tombstone(first: number, n: number): void {
    if (this.tombs.add(first, n, this.metadata.size)) this.records.revoked(first, n);
  }

  /** True when `id` belongs to a revoked batch. */
  isTombstoned(id: number): boolean {
    return this.tombs.has(id);
  }

  /** Tombstoned id ranges (for snapshots). */
  tombstones(): Array<[number, number]> {
    return this.tombs.list();
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
  }

  /** Vectors not yet in FAISS, oldest first (for snapshots: pin them while they are read). */
  pendingVectors(): PendingVectors[] {
    return this.pending.vectors();
  }

  /**
   * Keeps the memory of today's pending batches valid (no buffer goes back to its pool)
   * until the returned function is called: a snapshot writes them after the cut.
   */
  pinPending(): () => void {
    return this.pending.pin();
  }

  /**
   * Accepts a batch: `vectors` (n*dim, owned by the shard from now on) and its packed
   * metadata. Returns the internal id of the first vector. Training or a background add
   * starts as the original's rules say; `trainAsync: false` awaits a triggered training.
   * `release` (owned by the shard from now on) is called once FAISS holds the vectors:
   * they may live in a request's receive buffer, handed to FAISS without a copy. float16
   * (checked: checkHalfMatrix) waits as it is and is widened chunk by chunk for FAISS.
   */
  async add(
    vectors: PendingVectors,
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
    const first = this.metadata.append(blob, offsets);
    if (opts.ids) this.records.put(first, opts.ids);
    else this.records.putAnonymous();
    this.pending.push({ vectors, release: opts.release });
    if (opts.replay) return first; // restore: resume() starts training/adding once everything is back
    if (this.stateValue === IndexState.NOT_TRAINED) {
      if (!this.sharedTraining && this.cfg.trainNum > 0 && this.pending.count >= this.cfg.trainNum) {
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
      else if (this.cfg.trainNum > 0 && this.pending.count >= this.cfg.trainNum) this.startTraining().catch(() => {});
    } else {
      this.drainPending();
    }
  }

  /**
   * Runs `cut` synchronously at a moment when FAISS, the buffer and the metadata agree
   * (no background add chunk in progress): see Adder.quiesce.
   */
  quiesce<T>(cut: () => T): Promise<T> {
    return this.adder.quiesce(cut);
  }

  /**
   * Runs `job` (a FAISS write that must not interleave with the background adder, e.g. a
   * compaction) between two add chunks: see Adder.betweenChunks.
   */
  betweenChunks<T>(job: () => Promise<T>): Promise<T> {
    return this.adder.betweenChunks(job);
  }

  /**
   * Trains now on the buffered vectors and waits until training is done (adds continue in
   * the background). False when there is nothing to train on: a shard that holds no vectors
   * trains once it reaches trainNum (or on the next syncTrain); the client decides whether
   * the cluster as a whole had nothing.
   */
  async syncTrain(): Promise<boolean> {
    this.checkOpen();
    if (!this.index && !this.training && this.pending.count === 0) return false;
    await this.startTraining();
    return true;
  }

  /** Starts training in the background and returns at once. */
  asyncTrain(): void {
    this.checkOpen();
    this.startTraining().catch(() => {});
  }

  /** Up to `count` buffered vectors picked at random (seeded): this shard's part of a shared training sample (into `into` when given). */
  sample(count: number, offset = 0, of = this.pending.count, into?: Float32Array): Float32Array {
    this.checkOpen();
    if (!Number.isSafeInteger(count) || count < 0) throw new ValidationError('count', 'a non-negative integer', count);
    // The sample order is over the first `of` rows (fixed by the caller across chunked
    // calls; an untrained buffer only grows), so chunks never repeat or skip a row.
    const total = Math.min(of, this.pending.count);
    const from = Math.min(offset, total);
    const n = Math.min(count, total - from);
    return this.pending.sampleRows(n, total, from, into?.subarray(0, n * this.cfg.dim));
  }

  /**
   * Shared training, on the trainer: copies one chunk of the cluster's training sample
   * (rows [offset, offset + n) of `total`) into a staged buffer. A new sampleId replaces
   * the staged sample (a client that died half-way left it; the next one starts over).
   */
  stageSample(sampleId: string, offset: number, total: number, rows: Float32Array): void {
    this.checkOpen();
    this.staged.stage(sampleId, offset, total, rows);
  }

  /** The staged sample `sampleId`, with this shard's own share filled in, for trainShared (and no longer staged). */
  stagedSample(sampleId: string, total: number, own: { offset: number; count: number; of: number }): Float32Array {
    this.checkOpen();
    return this.staged.take(sampleId, total, own, (into) => this.sample(own.count, 0, own.of, into));
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
    if (sample.length === 0 && this.pending.count === 0) throw new IndexStateError('no vectors to train on: add data before training');
    const rows = sample.length > 0 ? sample : this.pending.sampleRows(wantedTrainRows(this.cfg, this.pending.count), this.pending.count);
    this.stateValue = IndexState.TRAINING;
    try {
      const { index, state } = await this.holdingSample(rows, () => trainSharedIndex(this.cfg, rows, this.params, opts));
      this.install(index, state);
      return state;
    } catch (err) {
      if (!this.index) this.stateValue = IndexState.NOT_TRAINED;
      this.lastError = err as Error;
      throw err;
    }
  }

  /** Runs a training on `sample`, whose bytes count in sampleBytes while it runs. */
  private async holdingSample<T>(sample: Float32Array, train: () => Promise<T>): Promise<T> {
    this.trainingSampleBytes = sample.byteLength;
    try {
      return await train();
    } finally {
      this.trainingSampleBytes = 0;
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
    const index = await buildFromTrained(this.cfg, state, this.params);
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
  async search(queries: Float32Array, k: number, withVectors: boolean, params?: CallSearchParams, probes?: SharedProbes): Promise<ShardSearchResult> {
    const index = this.index;
    // An empty index answers in the binding, under its lock: an add in flight is waited for.
    if (!index) return noHits(this.cfg, queries.length / this.cfg.dim, k, withVectors);
    return searchIndex(index, this.cfg, this.hidden, { queries, k, withVectors, ...(params ? { params } : {}), ...(probes ? { probes } : {}) });
  }

  /** Vectors in FAISS that searches must skip (revoked, deleted, replaced and not yet compacted). */
  private hiddenInFaiss(): number {
    return this.tombs.below(this.indexedUpTo) + this.records.toRemove.length;
  }

  /** Internal ids below this are in FAISS (or were compacted out of it); the rest are buffered. */
  get indexedUpTo(): number {
    return this.metadata.size - this.pending.count;
  }

  /** True when internal id `id` is never returned: its batch was revoked, or it was deleted or replaced. */
  isHidden(id: number): boolean {
    return this.records.isDead(id) || (!this.tombs.empty && this.tombs.has(id));
  }

  /** Resolves once internal ids below `upTo` are in FAISS, or at once when nothing is adding them (untrained, or failed). */
  whenIndexed(upTo: number): Promise<void> {
    if (!this.index || this.indexedUpTo >= upTo || (!this.adding && this.pending.count === 0)) return Promise.resolve();
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
  pendingBatches(): Array<{ first: number; vectors: PendingVectors }> {
    return this.pending.withIds(this.indexedUpTo);
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
    if (this.pending.count === 0) {
      return Promise.reject(new IndexStateError('no vectors to train on: add data before training'));
    }
    this.stateValue = IndexState.TRAINING;
    const trainRows = Math.min(rows ?? this.pending.count, this.pending.count);
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
    const wanted = wantedTrainRows(this.cfg, total);
    const sample = this.pending.sampleRows(wanted, total);
    this.adopt(await this.holdingSample(sample, () => trainOwnIndex(this.cfg, sample, wanted, total, this.params)));
  }

  /** Moves buffered vectors into FAISS in arrival order, in chunks, in the background. */
  private drainPending(): void {
    if (this.adding || this.pending.count === 0 || !this.index) return;
    this.stateValue = IndexState.ADD;
    const run = this.adder.run({
      index: this.index,
      buffer: this.pending,
      dim: this.cfg.dim,
      chunkRows: Math.max(1, Math.min(this.cfg.bufferBsz, MAX_ADD_CHUNK)),
      indexedUpTo: () => this.indexedUpTo,
      indexed: (at, rows) => {
        this.records.indexed(at, at + rows);
        this.wakeIndexWaiters(false);
      },
    });
    this.adding = run.then(
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
}

/** Checks a batch against the shard's dimension before anything is stored. */
export function checkBatch(cfg: IndexCfg, vectors: Float32Array | Uint16Array, n: number): void {
  if (!Number.isSafeInteger(n) || n <= 0) throw new ValidationError('n', 'a positive number of vectors (empty batches are refused)', n);
  if (vectors.length !== n * cfg.dim) {
    throw new ValidationError('vectors', `${n} x dim=${cfg.dim} = ${n * cfg.dim} values`, `${vectors.length} values`);
  }
}
