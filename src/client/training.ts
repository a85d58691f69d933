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
import { ConnectionError, IndexStateError, ServerUnavailableError } from '../errors.js';
import type { Metric } from '../native/index.js';
import type { IndexState } from '../shard/state.js';
import type { ServerConn } from './server-conn.js';

/** A shard's getInfo reply (the fields the client uses). */
export interface ShardInfoReply {
  state: IndexState;
  dim: number;
  metric: Metric;
  ntotal: number;
  buffered: number;
  /** Live vectors received: ntotal + buffered. */
  total: number;
  sharedTraining: boolean;
  trainNum: number;
  trainRatio: number;
  /** Revocations this shard holds for other servers (see Revocations). */
  heldRevocations?: number;
}

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

/**
 * Runs (or joins, or finishes) the shared training of `indexId` and resolves when every
 * live shard is trained. The trainer is the lowest-ranked shard already trained or
 * training (so a late shard gets the same centroids, and a training whose client died is
 * joined, not repeated), else the lowest-ranked live shard: clients that race pick the
 * same server, which runs a single training for all of them.
 */
export async function runSharedTraining(servers: readonly ServerConn[], indexId: string, dim: number, timeoutMs: number): Promise<void> {
  // Servers that are down are left out: they get the trained index when they are back.
  const settled = await Promise.allSettled(servers.map((s) => s.call<ShardInfoReply>('query', 'getInfo', { indexId }).then((r) => r.result)));
  const down: string[] = [];
  const infos = settled.map((r, i) => {
    if (r.status === 'fulfilled') return r.value;
    if (!(r.reason instanceof ConnectionError)) throw r.reason;
    down.push(servers[i]!.name);
    return null;
  });
  const byRank = (a: number, b: number): number => (servers[a]!.rank ?? a) - (servers[b]!.rank ?? b);
  const live = infos.flatMap((info, i) => (info ? [i] : [])).sort(byRank);
  if (live.length === 0) throw new ServerUnavailableError(down.join(', '), `no server answered to train index '${indexId}': ${down.join(', ')} down`);
  const untrained = live.filter((i) => infos[i]!.state === 'NOT_TRAINED');
  let trainer = live.find((i) => infos[i]!.state !== 'NOT_TRAINED') ?? -1;
  let sample: Float32Array = new Float32Array(0);
  if (untrained.length > 0 && trainer < 0) {
    trainer = live[0]!;
    sample = await drawSample(servers, indexId, dim, infos, timeoutMs);
  }
  if (untrained.length > 0) {
    // Already trained: returns its centroids at once; training for a client that is gone: joins it.
    const trained = await servers[trainer]!.call('bulk', 'trainShared', { indexId }, [sample], { timeoutMs });
    const centroids = trained.attachments[0] as Float32Array;
    await Promise.all(
      untrained.filter((i) => i !== trainer).map((i) => servers[i]!.call('bulk', 'installTrained', { indexId }, [centroids], { timeoutMs })),
    );
  }
  if (down.length > 0) {
    throw new ServerUnavailableError(down.join(', '), `index '${indexId}' is trained on the live servers; ${down.join(', ')} did not answer and get the trained index when they are back`);
  }
}

/** The training sample: from each live shard in proportion to its buffer, trainNum rows (or trainRatio of all). */
async function drawSample(servers: readonly ServerConn[], indexId: string, dim: number, infos: ReadonlyArray<ShardInfoReply | null>, timeoutMs: number): Promise<Float32Array> {
  const first = infos.find((i): i is ShardInfoReply => i !== null)!;
  const total = infos.reduce((a, i) => a + (i?.buffered ?? 0), 0);
  if (total === 0) throw new IndexStateError(`index '${indexId}' has no vectors to train on: add data before training`);
  const { trainNum, trainRatio } = first;
  const wanted = trainNum > 0 ? Math.min(trainNum, total) : Math.max(1, Math.floor(total * trainRatio));
  const parts = await Promise.all(
    servers.map(async (s, i) => {
      const count = infos[i] ? Math.ceil((wanted * infos[i].buffered) / total) : 0;
      if (count === 0) return new Float32Array(0);
      const r = await s.call('bulk', 'sampleVectors', { indexId, count }, [], { timeoutMs });
      return r.attachments[0] as Float32Array;
    }),
  );
  const sample = new Float32Array(Math.min(wanted, parts.reduce((a, p) => a + p.length / dim, 0)) * dim);
  let off = 0;
  for (const p of parts) {
    const take = p.subarray(0, Math.min(p.length, sample.length - off));
    sample.set(take, off);
    off += take.length;
  }
  return sample;
}
