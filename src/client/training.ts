/**
 * Shared training, driven from the client: (1) a sample drawn across shards in proportion
 * to their buffers, (2) one training on one server (the trainer), which returns its
 * centroids, (3) installed on every other untrained shard.
 *
 * No step of it lives only in the client that started it. Each leaves its result on the
 * servers: the buffered vectors, the trainer's running training (it goes on when the
 * client is gone), the trainer's centroids (on disk before they are returned), and the
 * installed shards. So any client can tell from the shards' infos what is left to do
 * (`trainingDue`) and finish it: joining a running training, installing the trainer's
 * centroids on the shards still untrained, or starting again from the buffers.
 */
import { randomUUID } from 'node:crypto';
import { ConnectionError, IndexStateError, ServerUnavailableError } from '../errors.js';
import type { ArgsOf, ShardInfoReply } from '../contract.js';
import type { IndexState } from '../shard/state.js';
import type { ShardOperation } from '../shard-operation.js';
import type { CallControl } from './call-control.js';


const isTrained = (s: IndexState): boolean => s === 'TRAINED' || s === 'ADD';

/**
 * True when a shared training has work left that a client should do now: a shard is
 * trained (or training) while others are not (join it and install its centroids), or no
 * shard is trained yet and the cluster buffers trainNum vectors (start it). `null` infos
 * are servers that did not answer.
 */
export function trainingDue(infos: ReadonlyArray<ShardInfoReply | null>): boolean {
  const live = infos.filter((i): i is ShardInfoReply => i !== null);
  if (live.length === 0 || !live[0]!.sharedTraining) return false;
  if (!live.some((i) => i.state === 'NOT_TRAINED')) return false;
  if (live.some((i) => isTrained(i.state) || i.state === 'TRAINING')) return true;
  const { trainNum } = live[0]!;
  return trainNum > 0 && live.reduce((a, i) => a + i.buffered, 0) >= trainNum;
}

/**
 * The cluster's state from its shards' infos, with the original's aggregation, except that
 * a shard holding no vectors at all does not keep a trained cluster NOT_TRAINED (it has
 * nothing to train on and nothing to search; it trains once data reaches it).
 */
export function clusterState(infos: readonly ShardInfoReply[], aggregate: (s: IndexState[]) => IndexState): IndexState {
  const counted = infos.some((i) => isTrained(i.state)) ? infos.filter((i) => !(i.state === 'NOT_TRAINED' && i.total === 0)) : infos;
  return aggregate(counted.map((i) => i.state));
}

/** Every server's info for the index; null for servers that did not answer (down). Other errors are thrown. */
export async function shardInfos(servers: readonly ShardOperation[], indexId: string, control: CallControl = {}): Promise<Array<ShardInfoReply | null>> {
  const settled = await Promise.allSettled(servers.map((s) => s.call('query', 'getInfo', { indexId }, [], control)));
  return settled.map((r) => {
    if (r.status === 'fulfilled') return r.value.result;
    if (r.reason instanceof ConnectionError && !control.signal?.aborted) return null;
    throw r.reason;
  });
}

/**
 * Runs (or joins, or finishes) the shared training of `indexId` and resolves when every
 * live shard is trained. The trainer is the lowest-ranked shard already trained or
 * training (so a late shard gets the same centroids, and a training whose client died is
 * joined, not repeated), else the lowest-ranked live shard: clients that race pick the
 * same server, which runs a single training for all of them.
 */
export async function runSharedTraining(servers: readonly ShardOperation[], indexId: string, dim: number, timeoutMs: number): Promise<void> {
  // Servers that are down are left out: they get the trained index when they are back.
  const infos = await shardInfos(servers, indexId);
  const down = infos.flatMap((info, i) => (info ? [] : [servers[i]!.name]));
  const byRank = (a: number, b: number): number => (servers[a]!.rank ?? a) - (servers[b]!.rank ?? b);
  const live = infos.flatMap((info, i) => (info ? [i] : [])).sort(byRank);
  if (live.length === 0) throw new ServerUnavailableError(down.join(', '), `no server answered to train index '${indexId}': ${down.join(', ')} down`);
  const untrained = live.filter((i) => infos[i]!.state === 'NOT_TRAINED');
  let trainer = live.find((i) => infos[i]!.state !== 'NOT_TRAINED') ?? -1;
  if (untrained.length > 0) {
    let args: ArgsOf<'trainShared'> = { indexId };
    if (trainer < 0) {
      trainer = live[0]!;
      args = { indexId, ...(await stageSample(servers, indexId, dim, infos, trainer, timeoutMs)) };
    }
    // Already trained: returns its centroids at once; training for a client that is gone: joins it.
    const trained = await servers[trainer]!.call('bulk', 'trainShared', args, [], { timeoutMs });
    const [state] = trained.attachments;
    const { nlist, layout } = trained.result;
    await Promise.all(
      untrained.filter((i) => i !== trainer).map((i) => servers[i]!.call('bulk', 'installTrained', { indexId, nlist, layout }, [state], { timeoutMs })),
    );
  }
  if (down.length > 0) {
    throw new ServerUnavailableError(down.join(', '), `index '${indexId}' is trained on the live servers; ${down.join(', ')} did not answer and get the trained index when they are back`);
  }
}

/** Largest piece of a training sample in one frame (the default frame limit is 256 MiB). */
const SAMPLE_CHUNK_BYTES = 32 << 20;

/**
 * Stages the training sample on the trainer: trainNum rows (or trainRatio of all) drawn from
 * each live shard in proportion to its buffer. The other shards' shares travel in chunks of
 * at most 32 MiB, one at a time, so a sample of any trainNum x dim works with default frame
 * limits and never sits whole in the client; the trainer draws its own share itself.
 * Returns trainShared's arguments for that sample.
 */
async function stageSample(
  servers: readonly ShardOperation[],
  indexId: string,
  dim: number,
  infos: ReadonlyArray<ShardInfoReply | null>,
  trainer: number,
  timeoutMs: number,
): Promise<{ sampleId: string; total: number; own: { offset: number; count: number; of: number } }> {
  const buffered = infos.map((i) => i?.buffered ?? 0);
  const total = buffered.reduce((a, b) => a + b, 0);
  if (total === 0) throw new IndexStateError(`index '${indexId}' has no vectors to train on: add data before training`);
  const { trainNum, trainRatio } = infos[trainer]!;
  const wanted = trainNum > 0 ? Math.min(trainNum, total) : Math.max(1, Math.floor(total * trainRatio));
  const counts = proportionalShares(wanted, buffered);
  const sampleId = randomUUID();
  // Under the trainer's frame limit too (leaving room for the envelope).
  const chunkBytes = Math.min(SAMPLE_CHUNK_BYTES, (servers[trainer]!.maxFrameBytes ?? SAMPLE_CHUNK_BYTES) - 65536);
  const chunkRows = Math.max(1, Math.floor(chunkBytes / (dim * 4)));
  let offset = 0;
  let own = { offset: 0, count: 0, of: 0 };
  for (let i = 0; i < servers.length; i++) {
    const count = counts[i]!;
    if (i === trainer) own = { offset, count, of: buffered[i]! };
    else {
      for (let done = 0; done < count; ) {
        const r = await servers[i]!.call('bulk', 'sampleVectors', { indexId, count: Math.min(chunkRows, count - done), offset: done, of: buffered[i]! }, [], { timeoutMs });
        const [rows] = r.attachments;
        const n = rows.length / dim;
        if (n === 0) throw new IndexStateError(`server ${servers[i]!.name} returned fewer sample rows of '${indexId}' than it buffered (reloaded meanwhile?): train again`);
        await servers[trainer]!.call('bulk', 'stageSample', { indexId, sampleId, offset: offset + done, total: wanted }, [rows], { timeoutMs });
        r.release?.();
        done += n;
      }
    }
    offset += count;
  }
  return { sampleId, total: wanted, own };
}

/** `total` split in proportion to `weights`, summing exactly to total (largest remainders get the rest). */
export function proportionalShares(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map((w) => (sum > 0 ? (total * w) / sum : 0));
  const shares = exact.map(Math.floor);
  let left = total - shares.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => [e - Math.floor(e), i] as const).sort((a, b) => b[0] - a[0]);
  for (const [, i] of order) {
    if (left <= 0) break;
    if (shares[i]! < weights[i]!) {
      shares[i]!++;
      left--;
    }
  }
  return shares;
}
