/**
 * When this client starts, joins or finishes a shared training (the steps themselves are in
 * training.ts): after an add once the cluster buffers trainNum vectors, on syncTrain /
 * asyncTrain, and whenever a touch of the index shows a training left unfinished (another
 * client may have started it and died). close() waits for the ones this client runs.
 */
import { IndexStateError } from '../errors.js';
import type { ShardInfoReply } from '../contract.js';
import type { IndexState } from '../shard/state.js';
import type { Connections } from './connections.js';
import type { CallControl } from './call-control.js';
import type { IndexMeta } from './index-meta.js';
import { runSharedTraining, trainingDue } from './training.js';

/** What an add reply says about the shard (undefined from a server that says nothing). */
export type AddReply = { firstId: number; state: IndexState; buffered?: number; revoked?: boolean } | undefined;

export class TrainingTrigger {
  /** Per index: when this client last asked the shards whether a shared training is left to finish (see check). */
  private readonly checked = new Map<string, number>();

  constructor(
    private readonly conns: Connections,
    private readonly opts: { trainTimeoutMs: number; reconnectIntervalMs: number; closeTimeoutMs: number },
  ) {}

  /**
   * Shared training starts once the cluster buffers trainNum vectors (the sum of the
   * servers' latest counts), or at once for a shard still untrained in a trained cluster
   * (one that was down during the install). Returns the training, if this add started or joined one.
   */
  afterAdd(indexId: string, meta: IndexMeta, serverIdx: number, reply: AddReply): Promise<void> | null {
    if (!meta.sharedTraining || !reply || typeof reply.buffered !== 'number') return null;
    meta.buffered[serverIdx] = reply.buffered;
    if (reply.state !== 'NOT_TRAINED') {
      if (reply.state !== 'TRAINING') meta.clusterTrained = true;
      return null;
    }
    const total = meta.buffered.reduce((a, b) => a + b, 0);
    if (!meta.clusterTrained && (meta.trainNum === 0 || total < meta.trainNum)) return meta.training;
    const t = this.sharedTrain(indexId, meta);
    t.catch(() => {}); // background: a failure shows as NOT_TRAINED, and the next add tries again
    return t;
  }

  /**
   * Trains now on the buffered data and resolves when every shard is trained: once on a
   * sample drawn across shards with trainMode 'shared', else each shard on its own buffer.
   */
  async syncTrain(indexId: string, meta: IndexMeta, control: CallControl = {}): Promise<void> {
    if (meta.sharedTraining) {
      await this.sharedTrain(indexId, meta);
      return;
    }
    // Per shard: a shard holding no vectors has nothing to train (it trains once data reaches
    // it); only a cluster without any vector is an error.
    const done = await this.conns.all('bulk', 'syncTrain', { indexId }, { timeoutMs: control.timeoutMs ?? this.opts.trainTimeoutMs, ...(control.signal ? { signal: control.signal } : {}) });
    if (!done.some((d) => d.trained)) throw new IndexStateError(`index '${indexId}' has no vectors to train on: add data before training`);
  }

  /** One shared training per index at a time from this client; others join it. */
  sharedTrain(indexId: string, meta: IndexMeta): Promise<void> {
    meta.training ??= this.runShared(indexId, meta).finally(() => {
      meta.training = null;
    });
    return meta.training;
  }

  private async runShared(indexId: string, meta: IndexMeta): Promise<void> {
    await runSharedTraining(this.conns.servers, indexId, meta.dim, this.opts.trainTimeoutMs);
    meta.clusterTrained = true;
  }

  /**
   * Finishes what a shared training left to do, judged from every shard's info (another
   * client may have started it and died): returns the training this client now runs or
   * joins, or null when nothing is due.
   */
  finish(indexId: string, meta: IndexMeta, infos: ReadonlyArray<ShardInfoReply | null>): Promise<void> | null {
    if (meta.training) return meta.training;
    if (!meta.sharedTraining || !trainingDue(infos)) return null;
    const t = this.sharedTrain(indexId, meta);
    t.catch(() => {}); // background: a failure shows as NOT_TRAINED, and the next touch tries again
    return t;
  }

  /**
   * A search saw an untrained shard of a shared-training index: asks every shard, in the
   * background and at most once per reconnectIntervalMs per index, whether a training is
   * left to finish.
   */
  check(indexId: string, meta: IndexMeta): void {
    if (!meta.sharedTraining || meta.training || this.conns.isClosed) return;
    const now = Date.now();
    if (now - (this.checked.get(indexId) ?? 0) < this.opts.reconnectIntervalMs) return;
    this.checked.set(indexId, now);
    this.conns.infos(indexId).then(
      (infos) => void this.finish(indexId, meta, infos),
      () => {},
    );
  }

  /** close(): waits (up to closeTimeoutMs) for the shared trainings this client runs. */
  async settle(indexes: ReadonlyMap<string, IndexMeta>): Promise<void> {
    const running = [...indexes].filter(([, m]) => m.training);
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      Promise.allSettled(running.map(([, m]) => m.training)).then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), this.opts.closeTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (!finished) {
      const ids = running.filter(([, m]) => m.training).map(([id]) => `'${id}'`);
      process.emitWarning(
        `dfaiss: the shared training of ${ids.join(', ')} was still running after closeTimeoutMs (${this.opts.closeTimeoutMs} ms); ` +
          'it goes on on its server, and the next client that touches the index (add, search, getState, status, syncTrain) installs it on every shard',
        { code: 'DFAISS_TRAINING_UNFINISHED' },
      );
    }
  }
}
