/** What the client knows of each index: shape, placement cursor, shared-training bookkeeping. */
import type { IndexTypeCfg } from '../config/search-params.js';
import type { ShardInfoReply } from '../contract.js';
import type { Metric } from '../vectors.js';

export interface IndexMeta {
  dim: number;
  metric: Metric;
  /** The index stores records with ids (true), vectors without (false), or this client does not know yet (null). */
  withIds?: boolean | null;
  /** Next server for round-robin placement. */
  next: number;
  /** This client trains the index once for all shards (trainMode 'shared' on a type that needs training). */
  sharedTraining: boolean;
  trainNum: number;
  /** Each server's buffered count, from its latest add reply (to start a shared training). */
  buffered: number[];
  /** Some shard is trained: a shard still NOT_TRAINED only needs the centroids installed. */
  clusterTrained: boolean;
  /** The shared training this client is running, if any. */
  training: Promise<void> | null;
  /** What decides its search parameters (null from a server that does not report it). */
  type: IndexTypeCfg | null;
}

/** A fresh meta; placement starts at a random server. */
export function newMeta(servers: number, dim: number, metric: Metric, sharedTraining: boolean, trainNum: number, type: IndexTypeCfg | null): IndexMeta {
  return {
    dim,
    metric,
    next: Math.floor(Math.random() * servers),
    sharedTraining: sharedTraining === true,
    trainNum,
    buffered: new Array<number>(servers).fill(0),
    clusterTrained: false,
    training: null,
    type: type && { indexBuilderType: type.indexBuilderType, faissFactory: type.faissFactory, centroids: type.centroids, inferCentroids: type.inferCentroids },
  };
}

/** A meta made from a shard's info. */
export function metaFromInfo(servers: number, info: ShardInfoReply): IndexMeta {
  return newMeta(servers, info.dim, info.metric, info.sharedTraining, info.trainNum, indexTypeOf(info));
}

/** The index-type fields of a shard's info (to check search parameters before sending them). */
function indexTypeOf(info: ShardInfoReply): IndexTypeCfg | null {
  if (info.faissFactory === undefined) return null;
  return { indexBuilderType: info.indexBuilderType ?? null, faissFactory: info.faissFactory, centroids: info.centroids ?? 0, inferCentroids: info.inferCentroids ?? false };
}
