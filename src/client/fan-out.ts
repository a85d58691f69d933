/**
 * Reads that go to every server: the fan-out search (each server's top-k, to be merged by
 * merge.ts) and whole-index reads (ntotal, ids). Pending revocations of a server go out
 * before it is read: its answer could otherwise count a moved batch twice.
 */
import { ConnectionError, IndexStateError, ServerUnavailableError } from '../errors.js';
import type { ArgsOf, ResultOf } from '../contract.js';
import { offsetsView } from '../protocol/metadata.js';
import { IndexState } from '../shard/state.js';
import type { Filter } from '../filter/schema.js';
import type { CallControl } from './call-control.js';
import type { ReplyHits } from './merge.js';
import type { BatchProbes } from './quantize-once.js';
import type { Revocations } from './revocations.js';
import type { ConnKind, ShardOperation } from '../shard-operation.js';

export interface SearchRequest {
  indexId: string;
  queries: Float32Array;
  k: number;
  returnEmbeddings: boolean;
  allowPartial: boolean;
  params?: Record<string, number>;
  /** Only records this declarative filter admits (checked by the caller). */
  filter?: Filter;
  control?: CallControl;
  /** The batch's probe lists, computed once (quantize-once.ts): each shard uses them if its quantizer matches. */
  probes?: BatchProbes | null;
  /** Called before the "no searchable vectors" error when some shard is still untrained. */
  onUntrained?: () => void;
}

export interface FanOutResult {
  shards: ReplyHits[];
  /** Searchable vectors across the shards that answered. */
  ntotal: number;
  /** With allowPartial: the servers that did not answer, and why. */
  missing: Array<{ server: string; error: string }>;
  /** Some shard is still untrained. */
  untrained: boolean;
  /** Per server, the revocations it holds for other servers. */
  held: number[];
  /** With a filter: the searchable records it admitted on the shards that answered. */
  matches: number;
}

/**
 * A fan-out search. A shard that holds revocations this client does not know yet (see
 * Revocations) may mean another shard's hits count a moved batch twice: they are fetched
 * and delivered, and the search runs once more.
 */
export async function fanOutSearch(servers: readonly ShardOperation[], revocations: Revocations, req: SearchRequest): Promise<FanOutResult> {
  const first = await fanOutSearchOnce(servers, revocations, req);
  if (!(await revocations.learnHeld(req.indexId, first.held))) return first;
  return fanOutSearchOnce(servers, revocations, req);
}

async function fanOutSearchOnce(servers: readonly ShardOperation[], revocations: Revocations, req: SearchRequest): Promise<FanOutResult> {
  const { indexId, queries, k, returnEmbeddings, allowPartial, params, filter, probes, control = {} } = req;
  const args = {
    indexId,
    k,
    returnEmbeddings,
    ...(params ? { params } : {}),
    ...(filter ? { filter } : {}),
    ...(probes ? { probes: { fingerprint: probes.fingerprint, nprobe: probes.nprobe } } : {}),
  };
  const attachments = probes ? [queries, probes.assign, probes.coarse] : [queries];
  const settled = await Promise.allSettled(
    servers.map(async (s, i) => {
      await revocations.readyToRead(i, indexId);
      return s.call('query', 'search', args, attachments, control);
    }),
  );
  const missing: Array<{ server: string; error: string }> = [];
  const replies = [];
  const held = settled.map((r) => (r.status === 'fulfilled' ? (r.value.result.held ?? 0) : 0));
  for (let i = 0; i < settled.length; i++) {
    const r = settled[i]!;
    if (r.status === 'fulfilled') replies.push(r.value);
    else if (allowPartial && r.reason instanceof ConnectionError) missing.push({ server: servers[i]!.name, error: (r.reason as Error).message });
    else throw r.reason;
  }
  if (replies.length === 0) throw new ServerUnavailableError(missing.map((m) => m.server).join(', '), `no server answered: ${missing.map((m) => `${m.server}: ${m.error}`).join('; ')}`);
  let ntotal = 0;
  let matches = 0;
  let trained = false;
  let untrained = false;
  const shards = replies.map((r): ReplyHits => {
    ntotal += r.result.ntotal;
    matches += r.result.filtered?.matches ?? 0;
    if (r.result.state === IndexState.NOT_TRAINED) untrained = true;
    if (r.result.ntotal > 0) trained = true;
    const att = r.attachments;
    const [distances, labels, blob, offBytes] = att;
    const vectors = returnEmbeddings ? (att[4] as Float32Array) : undefined;
    // Records with ids: each hit's id comes packed like metadata in the last two attachments.
    const ids = r.result.ids ? { blob: att[att.length - 2] as Uint8Array, offsets: offsetsView(att[att.length - 1] as Uint8Array) } : undefined;
    return { distances, labels, k, blob, offsets: offsetsView(offBytes), vectors, metric: r.result.metric, ids };
  });
  if (!trained) {
    if (untrained) req.onUntrained?.();
    throw new IndexStateError(`index '${indexId}' has no searchable vectors yet: add data and wait until getState() is TRAINED`);
  }
  return { shards, ntotal, missing, untrained, held, matches };
}

/** A read of every server's copy of an index's data (getNtotal, getIds): pending revocations go first. */
export async function readEverywhere<M extends 'getNtotal' | 'getIds'>(
  servers: readonly ShardOperation[],
  revocations: Revocations,
  conn: ConnKind,
  method: M,
  indexId: string,
  control: CallControl = {},
): Promise<Array<ResultOf<M>>> {
  // Revocations some shard holds that this client does not know go first (see fanOutSearch).
  // A server that does not answer, or lacks the index, holds none that matter here.
  const infos = await Promise.allSettled(servers.map((s) => s.call('query', 'getInfo', { indexId }, [], control)));
  control.signal?.throwIfAborted();
  await revocations.learnHeld(indexId, infos.map((r) => (r.status === 'fulfilled' ? (r.value.result.heldRevocations ?? 0) : 0)));
  const results = await Promise.all(
    servers.map(async (s, i) => {
      await revocations.readyToRead(i, indexId);
      return s.call<M>(conn, method, { indexId } as ArgsOf<M>, [], control); // both take { indexId }
    }),
  );
  return results.map((r) => r.result);
}
