/**
 * Training a shard's FAISS index: per shard on its own buffer, shared (one shard trains on
 * a sample drawn across the cluster and exports its trained state, plain arrays), installing
 * another shard's trained state, and staging the cluster's sample on the trainer.
 * The shard's life-cycle state changes stay in shard.ts.
 */
import { createFaissIndex, type IndexCfg } from '../config/index.js';
import { IndexStateError, ValidationError } from '../errors.js';
import { trimMemory, type FaissIndex, type TrainedState } from '../native/index.js';

/** Largest shared-training sample a trainer stages (float32 values: 4 GiB). */
const MAX_SAMPLE_VALUES = 2 ** 30;

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

/** Training set size for `total` available rows: trainNum, else trainRatio of them. */
export function wantedTrainRows(cfg: IndexCfg, total: number): number {
  const { trainNum, trainRatio } = cfg;
  return trainNum > 0 ? Math.min(trainNum, total) : Math.max(1, Math.floor(total * trainRatio));
}

/** Applies the shard's search parameters (e.g. nprobe) to a newly built index. */
export async function applyParams(index: FaissIndex, params: ReadonlyMap<string, number>): Promise<void> {
  for (const [name, value] of params) await index.setParameter(name, value);
}

/** Per-shard training: an index trained on `sample` (`wanted` rows of the first `total` buffered; reordered in place). */
export async function trainOwnIndex(cfg: IndexCfg, sample: Float32Array, wanted: number, total: number, params: ReadonlyMap<string, number>): Promise<FaissIndex> {
  const index = await createFaissIndex(cfg, wanted, { totalVectors: total });
  if (!index.isTrained) {
    // Sorted: the training depends on which rows the shard holds, not on their arrival order.
    await index.train(sample, { sortRows: true });
    await trimMemory(); // as in trainSharedIndex
  }
  await applyParams(index, params);
  return index;
}

/** Shared training on the trainer: a new index trained on the cluster's sample (`rows`, reordered in place), and its trained state for the others. */
export async function trainSharedIndex(cfg: IndexCfg, rows: Float32Array, params: ReadonlyMap<string, number>, opts: SharedTrainingOptions): Promise<{ index: FaissIndex; state: SharedTrained }> {
  const n = rows.length / cfg.dim;
  const index = await createFaissIndex(cfg, n, { totalVectors: n });
  // Sorted: the same rows train the same state whichever shard held which of them and in
  // what order they were staged (placement starts at a random server).
  if (!index.isTrained) await index.train(rows, { threads: opts.threads, sortRows: true });
  opts.sampleDone?.(); // the sample's memory can go before this shard's adds start
  // k-means freed its buffers in the arenas of the threads it ran on; the adds that come
  // next allocate elsewhere, so hand that memory back first (measured: ~30 MiB of peak).
  await trimMemory();
  await applyParams(index, params);
  return { index, state: { nlist: index.nlist, ...(await index.exportTrained()) } };
}

/**
 * An index built from this shard's cfg (with the trainer's nlist, which it may have inferred
 * from its sample size) holding another shard's trained state, which must fit its layout.
 */
export async function buildFromTrained(cfg: IndexCfg, state: SharedTrained, params: ReadonlyMap<string, number>): Promise<FaissIndex> {
  if (!Number.isSafeInteger(state.nlist) || state.nlist === 0 || state.nlist < -1 || state.nlist > 1 << 24) {
    throw new ValidationError('nlist', 'the trainer\'s list count (1 to 2^24, or -1 for an index without lists)', state.nlist);
  }
  const own = state.nlist > 0 ? { ...cfg, centroids: state.nlist, inferCentroids: false } : cfg;
  // Built, not trained, here: the training-set size checks do not apply (the trainer passed them).
  const built = 1 << 24;
  const index = await createFaissIndex(own, built, { totalVectors: built });
  await index.installTrainedState(state);
  await applyParams(index, params);
  return index;
}

/**
 * The cluster's training sample being staged on the trainer in chunks. A new sampleId
 * replaces the staged sample (a client that died half-way left it; the next one starts over).
 */
export class StagedSample {
  private staged: { id: string; data: Float32Array } | null = null;

  constructor(private readonly dim: number) {}

  /** Bytes of the sample being staged (0 when none is). */
  get bytes(): number {
    return this.staged?.data.byteLength ?? 0;
  }

  /** Copies rows [offset, offset + n) of the `total`-row sample `sampleId` into place. */
  stage(sampleId: string, offset: number, total: number, rows: Float32Array): void {
    const { dim } = this;
    if (total * dim > MAX_SAMPLE_VALUES) throw new ValidationError('total', `a training sample of at most ${Math.floor(MAX_SAMPLE_VALUES / dim)} rows of dim ${dim} (4 GiB)`, total);
    if (this.staged?.id !== sampleId) this.staged = { id: sampleId, data: new Float32Array(total * dim) };
    const { data } = this.staged;
    if (data.length !== total * dim || offset * dim + rows.length > data.length) {
      throw new ValidationError('offset', `rows within the staged sample of ${data.length / dim} rows`, `[${offset}, ${offset + rows.length / dim}) of ${total}`);
    }
    data.set(rows, offset * dim);
  }

  /**
   * The staged sample `sampleId` (no longer staged), or a new one when the whole sample is
   * the trainer's own share; `ownRows(into)` writes that share into place.
   */
  take(sampleId: string, total: number, own: { offset: number; count: number }, ownRows: (into: Float32Array) => Float32Array): Float32Array {
    let data: Float32Array;
    if (this.staged?.id === sampleId) data = this.staged.data;
    else if (own.count === total && own.offset === 0 && total * this.dim <= MAX_SAMPLE_VALUES) data = new Float32Array(total * this.dim); // the whole sample is this shard's
    else throw new IndexStateError(`no training sample '${sampleId}' is staged here (another client's training replaced it, or the server restarted): train again`);
    this.staged = null;
    if (!Number.isSafeInteger(own.offset) || own.offset < 0 || (own.offset + own.count) * this.dim > data.length) throw new ValidationError('own.offset', 'a share inside the staged sample', own.offset);
    // Written in place: a separate copy of the share would be garbage as large as itself.
    ownRows(data.subarray(own.offset * this.dim));
    return data;
  }
}
