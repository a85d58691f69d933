/**
 * The client's public option and result types (re-exported by index-client.ts and the
 * client entry).
 */
import type { Filter } from '../filter/schema.js';
import type { CallControl } from './call-control.js';
import type { ClientSecurityOptions } from './security-options.js';
import type { IterateCursor, RecordId } from './records.js';

export interface IndexClientOptions extends ClientSecurityOptions {
  /** How long connect() waits for the discovery file to list every server. @default 7_200_000 (2 h) */
  discoveryTimeoutMs?: number;
  /**
   * While connect() waits for the discovery file, gets a line every discoveryLogIntervalMs
   * saying what is missing (the file does not exist, is empty, lists 1 of 4 servers).
   * @default one line on stderr (pass `() => {}` to silence)
   */
  log?: (message: string) => void;
  /** @default 5000 */
  discoveryLogIntervalMs?: number;
  /**
   * Deadline of each call to a server: a dead or stuck server makes the call fail within it,
   * with an error naming the server. @default 120_000
   */
  callTimeoutMs?: number;
  /**
   * Deadline of training calls (syncTrain, and each step of a shared training), which can
   * run far longer than other calls. @default 3_600_000 (1 h)
   */
  trainTimeoutMs?: number;
  /**
   * While a server is down, reconnecting is tried at most this often; calls in between fail
   * at once. Pending batch revocations for it are retried at this interval too. @default 1000
   */
  reconnectIntervalMs?: number;
  /** TCP connect + hello deadline per server. @default 10_000 */
  connectTimeoutMs?: number;
  /** Batches being sent or stored at once across all servers; more addIndexData calls wait. @default 2 x servers */
  maxAddsInFlight?: number;
  /**
   * How long an add is resent to a server that answers ServerBusyError (its buffer of
   * vectors waiting for a training is full: --max-buffered-mb), pausing 50 ms to 2 s between
   * tries; past it the add fails with that error. A call's own `timeoutMs` bounds it too.
   * Each busy reply is a `serverBusy` event; `log` gets one line per 30 s while it lasts.
   * 0 = fail at once. @default 3_600_000 (1 h)
   */
  busyRetryMs?: number;
  /** Name shown in server logs. */
  clientName?: string;
  /**
   * How long close() waits for shared trainings this client runs (its adds reached
   * trainNum, or syncTrain/asyncTrain/getState started one) to be installed on every
   * shard. A training still running then goes on on its server, and the next client that
   * touches the index (add, search, getState, status, syncTrain) finishes it. @default 120_000
   */
  closeTimeoutMs?: number;
  /**
   * Quantize once for a fan-out search (IVF with shared training): one server finds each
   * query's probe lists and every shard searches them, instead of every shard repeating the
   * coarse search. 'auto' does it where it pays (client/quantize-once.ts); 'always' and
   * 'never' are for measuring. @default 'auto'
   */
  sharedQuantize?: SharedQuantize;
}

export type SharedQuantize = 'auto' | 'always' | 'never';

export interface SearchOptions extends CallControl {
  /**
   * Search parameters for this call only, e.g. `{ nprobe: 32 }` (IVF), `{ efSearch: 128 }`
   * (HNSW), `max_codes`, `quantizer_efSearch`: they never change the index other clients
   * search (setNprobe / setSearchParameter set its defaults). Validated for the index type.
   */
  params?: Record<string, number>;
  /** Also return each hit's stored vector. @default false */
  returnEmbeddings?: boolean;
  /**
   * Only records this declarative filter admits are searched (docs/filters.md), on the
   * servers, inside FAISS: k hits come back whenever k matching records exist.
   */
  filter?: Filter;
  /**
   * When some servers are down or fail, return the merged hits of the others and list the
   * missing ones in `missing`, instead of failing. @default false
   */
  allowPartial?: boolean;
}

/** M: the metadata type (see IndexClient.index<M>); null for vectors added without metadata. */
export interface SearchResults<M = unknown> {
  /** Per query, the scores of its hits, best first (inner product for 'dot', squared L2 for 'l2'). */
  scores: number[][];
  /** Per query, the metadata of its hits (null for vectors added without metadata). */
  metadata: M[][];
  /** Per query, each hit's record id (indexes whose records have ids). */
  ids?: Array<Array<RecordId | null>>;
  /** Per query, each hit's vector, with returnEmbeddings. */
  embeddings?: Float32Array[][];
  /** With allowPartial: the servers whose shards are missing from these results, and why. */
  missing?: Array<{ server: string; error: string }>;
  /** With a filter: how many searchable records it admitted, over the servers that answered. */
  matches?: number;
}

export type SearchFilter<M = unknown> =
  /** The original's form: drop hits whose metadata[filterPos] equals filterValue. */
  | { filterPos: number; filterValue: unknown }
  /** Keep only hits whose metadata passes the predicate. */
  | { where: (metadata: M) => boolean };

export interface AddOptions extends CallControl {
  /** Training triggered by this batch runs in the background (true) or before the call returns. @default true */
  trainAsync?: boolean;
  /**
   * One record id per vector (strings or safe integers, unique within the batch): the
   * records can then be read, replaced and deleted by id. Ids already stored are refused
   * (use upsert). An index holds either records with ids or vectors without; mixing is refused.
   */
  ids?: readonly RecordId[];
}

export interface GetOptions extends CallControl {
  /** Also return each record's stored vector. @default false */
  returnEmbeddings?: boolean;
}

export interface IterateOptions extends CallControl {
  /** Records per page (1..65536). @default 1000 */
  batchSize?: number;
  /** Also return each record's stored vector. @default true */
  returnEmbeddings?: boolean;
  /** Resume after the page that returned this cursor. */
  cursor?: IterateCursor | null;
  /** Only the records this declarative filter admits (docs/filters.md). */
  filter?: Filter;
}

/** What delete() removes: records by id, or every record a declarative filter admits ({ filter }, docs/filters.md). */
export type DeleteSelector = readonly RecordId[] | { filter: Filter };

/** What IndexClient emits (ioredis-style connection events). */
export interface IndexClientEvents {
  /** A server was found down (a reconnect to it failed); calls to it fail at once until it is back. */
  serverDown: [{ server: string; error: Error }];
  /** A server that was down answers again. */
  serverUp: [{ server: string }];
  /** A server answered an add with ServerBusyError (its buffer is full while it trains); the client resends the add. */
  serverBusy: [{ server: string; error: Error }];
}
