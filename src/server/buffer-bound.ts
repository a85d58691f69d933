/**
 * The bound on vectors a shard holds outside FAISS (buffered for a training, or waiting for
 * their background add), per index and server: `--max-buffered-mb`. An add past it waits
 * for room, then is answered busy (the client resends it), so memory stays bounded while a
 * training of any length only slows a load down.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createStandInIndex, type IndexCfg } from '../config/index.js';
import { IndexStateError, ServerBusyError, ValidationError } from '../errors.js';
import type { Shard } from '../shard/shard.js';
import { IndexState } from '../shard/state.js';
import type { Logger } from '../util/logger.js';

/**
 * The default bound, per index and server: a 768-d research load buffers ~730 MiB per
 * server while its shared training runs (bench/results/server-memory-768.md), and this keeps
 * such a server's RSS near half that without slowing the original's workload.
 */
export const DEFAULT_MAX_BUFFERED_BYTES = 512 * 2 ** 20;

/** Bytes as MiB with one decimal, for the messages. */
const mib = (b: number): string => (b / 2 ** 20).toFixed(1);

/** What a per-shard training buffers (as float32) before it can start. */
const trainBytes = (cfg: IndexCfg): number => cfg.trainNum * cfg.dim * 4;

export interface BufferBoundOptions {
  /** Bytes per index; 0 = no bound. undefined = DEFAULT_MAX_BUFFERED_BYTES, raised per index to what a per-shard training must gather. */
  maxBufferedBytes: number | undefined;
  /** How long an add waits for room before the server answers busy. */
  waitMs: number;
  rank: number;
  log: Logger;
}

export class BufferBound {
  private readonly limit: number;
  /** The bound was set (kept strictly) rather than defaulted (raised for per-shard trainings). */
  private readonly set: boolean;
  /** Per index: bytes of adds past the check and not yet applied (so concurrent adds cannot all squeeze in). */
  private readonly reserved = new Map<string, number>();

  constructor(private readonly opts: BufferBoundOptions) {
    this.limit = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.set = opts.maxBufferedBytes !== undefined;
  }

  /**
   * A per-shard training buffers trainNum vectors (as float32) before it can start: with a
   * set bound below that, the shard would fill up and wait for a training that never
   * starts, so such an index is refused when it is created. Shared training needs only the
   * shard's part of the sample, and types that need no training buffer nothing for it.
   */
  async checkCreate(cfg: IndexCfg): Promise<void> {
    const limit = this.limit;
    if (!this.set || limit <= 0 || trainBytes(cfg) <= limit) return;
    const standIn = await createStandInIndex(cfg);
    if (standIn.isTrained || (cfg.trainMode === 'shared' && standIn.trainedLayout !== null)) return;
    throw new ValidationError(
      'trainNum',
      `at most ${Math.floor(limit / (cfg.dim * 4))} for a per-shard training at dim ${cfg.dim}: trainNum ${cfg.trainNum} needs ${mib(trainBytes(cfg))} MiB buffered per shard and server ${this.opts.rank} may buffer ${mib(limit)} MiB per index (--max-buffered-mb); lower trainNum, use trainMode 'shared', or raise --max-buffered-mb`,
      cfg.trainNum,
    );
  }

  /**
   * Waits until the shard can buffer `bytes` more and reserves them; returns the release of
   * the reservation, called once the add is applied (its vectors then count in the shard's
   * buffer) or failed. `shardOf` is asked again on every try: a reload replaces the shard.
   */
  async room(indexId: string, shardOf: () => Shard, bytes: number): Promise<() => void> {
    if (this.limit <= 0) return () => {};
    const since = Date.now();
    for (let waited = 0; ; waited++) {
      const shard = shardOf();
      const gather = trainBytes(shard.cfg);
      const perShardTraining = !shard.sharedTraining && shard.state === IndexState.NOT_TRAINED;
      // The default bound never stops a per-shard training from gathering its trainNum.
      const limit = !this.set && perShardTraining ? Math.max(this.limit, gather) : this.limit;
      const reserved = this.reserved.get(indexId) ?? 0;
      const buffered = shard.bufferedBytes + reserved;
      // A training sample held here is memory as much as the buffer is (the trainer holds both).
      const sample = shard.sampleBytes;
      const held = buffered + sample;
      // An empty buffer always takes a batch, so a large sample alone never stops adds.
      if (buffered === 0 || held + bytes <= limit) {
        if (waited > 0) this.opts.log.debug({ indexId, waitedMs: Date.now() - since }, 'add waited for buffer room');
        this.reserved.set(indexId, reserved + bytes);
        let done = false;
        return () => {
          if (done) return;
          done = true;
          const left = (this.reserved.get(indexId) ?? bytes) - bytes;
          if (left > 0) this.reserved.set(indexId, left);
          else this.reserved.delete(indexId);
        };
      }
      const of = sample > 0 ? ` (${mib(sample)} MiB of them its training sample)` : '';
      const what = `index '${indexId}' on server ${this.opts.rank} holds ${mib(held)} MiB of vectors not yet in FAISS${of} and may hold ${mib(limit)} MiB (--max-buffered-mb)`;
      if (perShardTraining && gather > limit) {
        throw new IndexStateError(`${what}: its training starts at trainNum ${shard.cfg.trainNum} vectors (${mib(gather)} MiB), more than that; raise --max-buffered-mb or lower trainNum`);
      }
      if (Date.now() - since >= this.opts.waitMs) {
        const until = shard.state === IndexState.NOT_TRAINED ? 'its training (syncTrain starts it) frees' : shard.state === IndexState.TRAINING ? 'its training frees' : 'its background adds free';
        throw new ServerBusyError(`${what}: the batch was not stored; resend it once ${until} room (clients do so by themselves), or raise --max-buffered-mb`);
      }
      await sleep(20);
    }
  }
}
