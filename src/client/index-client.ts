/**
 * IndexClient: all coordination lives here. Places batches on servers round-robin, fans
 * every search out to all servers and merges the top-k, aggregates states and counts.
 * Each server gets two connections: one for bulk traffic (adds, training, saves) and one
 * for searches and small calls, so a search never queues behind a 16 MiB batch.
 */
import { defaultIndexCfg, type IndexCfg } from '../config/index-cfg.js';
import { checkCallSearchParams, checkSearchParameter, type IndexTypeCfg } from '../config/search-params.js';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { ConnectionError, IndexStateError, ServerUnavailableError, TimeoutError, ValidationError } from '../errors.js';
import { MAX_K, checkK, toMatrix, type Metric, type VectorsInput } from '../vectors.js';
import type { RpcClientOptions } from '../protocol/index.js';
import { encodeMetadata, metadataReader, offsetsBytes, offsetsView } from '../protocol/metadata.js';
import { aggregateStates, IndexState } from '../shard/state.js';
import { readDiscovery, type ServerAddress } from '../discovery/discovery-file.js';
import { mergeOutput, mergeQueryInto, type Metric as IndexMetric, type ShardHits } from './merge.js';
import { checkFilter, type Filter } from '../filter/index.js';
import * as rec from './records.js';
import type { DeleteResult, GetResult, IterateCursor, IteratePage, RangeSearchResults, RecordId } from './records.js';
import { ServerConn, type ConnKind } from './server-conn.js';
import { Revocations, type PendingRevocation } from './revocations.js';
import { clusterState, runSharedTraining, shardInfos, trainingDue } from './training.js';
import type { ArgsOf, MethodName, ResultOf, ShardInfoReply, StatusReply } from '../contract.js';
import { rpcClientSecurityOptions, type ClientSecurityOptions } from './security-options.js';

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
   * While a server is down, reconnecting is tried at most this often; calls in between fail
   * at once. Pending batch revocations for it are retried at this interval too. @default 1000
   */
  /**
   * Deadline of training calls (syncTrain, and each step of a shared training), which can
   * run far longer than other calls. @default 3_600_000 (1 h)
   */
  trainTimeoutMs?: number;
  reconnectIntervalMs?: number;
  /** TCP connect + hello deadline per server. @default 10_000 */
  connectTimeoutMs?: number;
  /** Batches being sent or stored at once across all servers; more addIndexData calls wait. @default 2 x servers */
  maxAddsInFlight?: number;
  /** Name shown in server logs. */
  clientName?: string;
  /**
   * How long close() waits for shared trainings this client runs (its adds reached
   * trainNum, or syncTrain/asyncTrain/getState started one) to be installed on every
   * shard. A training still running then goes on on its server, and the next client that
   * touches the index (add, search, getState, status, syncTrain) finishes it. @default 120_000
   */
  closeTimeoutMs?: number;
}

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

export interface SearchResults {
  /** Per query, the scores of its hits, best first (inner product for 'dot', squared L2 for 'l2'). */
  scores: number[][];
  /** Per query, the metadata of its hits (null for vectors added without metadata). */
  metadata: unknown[][];
  /** Per query, each hit's record id (indexes whose records have ids). */
  ids?: Array<Array<RecordId | null>>;
  /** Per query, each hit's vector, with returnEmbeddings. */
  embeddings?: Float32Array[][];
  /** With allowPartial: the servers whose shards are missing from these results, and why. */
  missing?: Array<{ server: string; error: string }>;
  /** With a filter: how many searchable records it admitted, over the servers that answered. */
  matches?: number;
}

export type SearchFilter =
  /** The original's form: drop hits whose metadata[filterPos] equals filterValue. */
  | { filterPos: number; filterValue: unknown }
  /** Keep only hits whose metadata passes the predicate. */
  | { where: (metadata: unknown) => boolean };

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

export interface GetOptions {
  /** Also return each record's stored vector. @default false */
  withVectors?: boolean;
}

export interface IterateOptions {
  /** Records per page (1..65536). @default 1000 */
  batchSize?: number;
  /** Also return each record's stored vector. @default true */
  withVectors?: boolean;
  /** Resume after the page that returned this cursor. */
  cursor?: IterateCursor | null;
  /** Only the records this declarative filter admits (docs/filters.md). */
  filter?: Filter;
}

/** What delete() removes: records by id, or every record a declarative filter admits ({ filter }, docs/filters.md). */
export type DeleteSelector = readonly RecordId[] | { filter: Filter };


/** How long close() tries to deliver pending revocations. */
const CLOSE_FLUSH_MS = 5000;

interface IndexMeta {
  dim: number;
  metric: IndexMetric;
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


/** What IndexClient emits (ioredis-style connection events). */
export interface IndexClientEvents {
  /** A server was found down (a reconnect to it failed); calls to it fail at once until it is back. */
  serverDown: [{ server: string; error: Error }];
  /** A server that was down answers again. */
  serverUp: [{ server: string }];
}

/**
 * Options every call of the client's main operations takes: a deadline for this call (instead
 * of callTimeoutMs) and an AbortSignal. An aborted call stops waiting at once and frees its
 * place (an add waiting for a slot never takes one).
 */
export interface CallControl {
  /** Deadline of this call in ms (per server request). @default callTimeoutMs */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class IndexClient extends EventEmitter<IndexClientEvents> {
  private readonly servers: ServerConn[];
  private readonly indexes = new Map<string, IndexMeta>();
  private readonly maxAddsInFlight: number;
  private readonly trainTimeoutMs: number;
  private readonly reconnectIntervalMs: number;
  private readonly closeTimeoutMs: number;
  /** Per index: when this client last asked the shards whether a shared training is left to finish (see search). */
  private readonly trainingChecked = new Map<string, number>();
  private readonly revocations: Revocations;
  private addsInFlight = 0;
  private readonly addWaiters: Array<() => void> = [];
  private closed = false;

  private constructor(servers: ServerConn[], opts: IndexClientOptions) {
    super();
    this.servers = servers;
    for (const s of servers) {
      s.onStateChange = (up, error) => {
        // Without a listener an 'error'-like event would be lost anyway; these never throw.
        if (up) this.emit('serverUp', { server: s.name });
        else this.emit('serverDown', { server: s.name, error: error! });
      };
    }
    this.maxAddsInFlight = Math.max(1, opts.maxAddsInFlight ?? 2 * servers.length);
    this.trainTimeoutMs = opts.trainTimeoutMs ?? 3_600_000;
    this.reconnectIntervalMs = opts.reconnectIntervalMs ?? 1000;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 120_000;
    this.revocations = new Revocations(servers, this.reconnectIntervalMs);
  }

  /** Reads the discovery file (waiting until every server is listed) and connects to all servers. */
  static async connect(discoveryPath: string, opts: IndexClientOptions = {}): Promise<IndexClient> {
    const addresses = await readDiscovery(discoveryPath, { timeoutMs: opts.discoveryTimeoutMs, log: opts.log, logIntervalMs: opts.discoveryLogIntervalMs });
    return IndexClient.connectTo(addresses, opts);
  }

  /** Connects to an explicit list of servers. */
  static async connectTo(addresses: readonly ServerAddress[], opts: IndexClientOptions = {}): Promise<IndexClient> {
    if (addresses.length === 0) throw new ValidationError('servers', 'at least one server address');
    const rpcOpts: RpcClientOptions = {
      callTimeoutMs: opts.callTimeoutMs ?? 120_000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      clientName: opts.clientName ?? `dfaiss-client-${process.pid}`,
      ...rpcClientSecurityOptions(opts),
    };
    const settled = await Promise.allSettled(addresses.map((address) => ServerConn.open(address, rpcOpts, opts.reconnectIntervalMs ?? 1000)));
    const failed = settled.find((s) => s.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) {
      await Promise.allSettled(settled.map((s) => (s.status === 'fulfilled' ? s.value.close() : undefined)));
      throw failed.reason;
    }
    return new IndexClient(settled.map((s) => (s as PromiseFulfilledResult<ServerConn>).value), opts);
  }

  /** Number of servers. */
  get numServers(): number {
    return this.servers.length;
  }

  /**
   * Batches moved to another server after their first server failed while holding them,
   * whose revocation that first server has not confirmed yet (it is retried every
   * reconnectIntervalMs and before this client reads from that server). The server the
   * batch moved to holds the same revocation durably, so if this client ends first, any
   * other client delivers it before it reads from the failed server.
   */
  get pendingRevocations(): PendingRevocation[] {
    return this.revocations.list();
  }

  /** Creates the index on every server (a no-op where it exists with the same cfg). */
  async createIndex(indexId: string, cfg: Partial<IndexCfg> | IndexCfg = {}): Promise<void> {
    const full = defaultIndexCfg(cfg);
    const created = await this.all('bulk', 'createIndex', { indexId, cfg: { ...full } });
    this.indexes.set(indexId, this.newMeta(full.dim, full.metric, created[0]!.sharedTraining, full.trainNum, full));
  }

  /**
   * Sends one batch to the next server (round-robin per index, starting at a random server)
   * and resolves when that server has accepted it. Call it several times without awaiting
   * to keep batches in flight to different servers (bounded by maxAddsInFlight).
   * A server that is down or fails while holding the batch is skipped: the batch goes to the
   * next server, and the failed one is told to revoke it once reachable (see
   * pendingRevocations). Fails with ServerUnavailableError when every server failed.
   * `vectors` is a row-major Float32Array (or one array per vector; a Uint16Array is sent as
   * float16). `metadata`, when given, has one plain msgpack-able value per vector (a
   * Uint8Array comes back from search as a Uint8Array); null or undefined, as a list or
   * an item, stores none (the original's None).
   */
  async addIndexData(indexId: string, vectors: VectorsInput | Uint16Array, metadata?: readonly unknown[] | null, opts: AddOptions = {}): Promise<void> {
    if (opts.ids !== undefined) return this.putRecords(indexId, opts.ids, vectors, metadata, false, opts.trainAsync ?? true);
    const meta = await this.indexMeta(indexId);
    await this.checkIdMode(indexId, meta, false);
    const { data, n } = batchMatrix(vectors, meta.dim);
    const { blob, offsets } = encodeMetadata(metadata, n);
    const attachments = [data, blob, offsetsBytes(offsets)];
    const trainAsync = opts.trainAsync ?? true;
    const control = callControl(opts);
    let training: Promise<void> | null = null;
    await this.acquireAddSlot(control.signal);
    try {
      ({ training } = await this.placeBatch(indexId, meta, n, trainAsync, attachments, control));
    } finally {
      this.releaseAddSlot();
    }
    if (training && !trainAsync) await training;
  }

  /**
   * Replaces records by id (adds those that do not exist). Each record goes to its home
   * server (see records.ts), which replaces the old version in the same WAL record. When
   * this resolves, reads (search, get, iterate) see only the new versions. If the client
   * dies midway, every record is the old or the new version, never both, never neither.
   */
  async upsert(indexId: string, ids: readonly RecordId[], vectors: VectorsInput | Uint16Array, metadata?: readonly unknown[]): Promise<void> {
    await this.putRecords(indexId, ids, vectors, metadata, true, true);
  }

  /** Deletes records by id on every server (durable when it resolves); unknown ids are reported. */
  async delete(indexId: string, selector: DeleteSelector): Promise<DeleteResult> {
    if (!Array.isArray(selector)) {
      if (selector && typeof selector === 'object' && 'filter' in selector) {
        const filter = checkFilter(selector.filter);
        await this.indexMeta(indexId);
        return rec.deleteByFilter(this.recordCall(indexId), this.servers.length, indexId, filter);
      }
      throw new ValidationError('ids', 'an array of record ids', selector);
    }
    const ids = rec.checkIdList(selector);
    await this.indexMeta(indexId);
    return rec.deleteEverywhere(this.recordCall(indexId), this.servers.length, indexId, ids);
  }

  /** Records by id, from whichever server holds them; ids nobody holds are listed in `unknown`. */
  async get(indexId: string, ids: readonly RecordId[], opts: GetOptions = {}): Promise<GetResult> {
    const list = rec.checkIdList(ids);
    const meta = await this.indexMeta(indexId);
    return rec.getEverywhere(this.recordCall(indexId), this.servers.length, indexId, list, opts.withVectors ?? false, meta.dim);
  }

  /**
   * Every stored record, page by page (server by server, in storage order). Each page has a
   * cursor: iterate(indexId, { cursor }) resumes after it (records stored meanwhile are
   * seen if they land after the cursor). Deleted and replaced records are skipped.
   */
  async *iterate(indexId: string, opts: IterateOptions = {}): AsyncGenerator<IteratePage> {
    const batchSize = opts.batchSize ?? 1000;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 65536) throw new ValidationError('batchSize', 'an integer from 1 to 65536', batchSize);
    const c = opts.cursor;
    if (c != null && (!Number.isSafeInteger(c.server) || c.server < 0 || !Number.isSafeInteger(c.after) || c.after < 0)) {
      throw new ValidationError('cursor', 'a cursor returned by iterate ({ server, after })', c);
    }
    const filter = opts.filter === undefined ? undefined : checkFilter(opts.filter);
    const meta = await this.indexMeta(indexId);
    yield* rec.iterateEverywhere(this.recordCall(indexId), this.servers.length, indexId, { batchSize, withVectors: opts.withVectors ?? true, cursor: c ?? null, dim: meta.dim, filter });
  }

  /**
   * Every stored vector within `radius` of each query (FAISS range_search on every shard,
   * merged per query, best first): squared L2 distance below radius for 'l2', inner
   * product / cosine similarity above it for 'dot' / 'cosine'. Index types without range
   * search (HNSW, PQ) fail with a FaissError saying so.
   */
  async rangeSearch(indexId: string, queries: VectorsInput, radius: number): Promise<RangeSearchResults> {
    const meta = await this.indexMeta(indexId);
    const { data, n } = toMatrix(queries, meta.dim, 'queries');
    if (typeof radius !== 'number' || !Number.isFinite(radius)) throw new ValidationError('radius', 'a finite number', radius);
    const replies = await Promise.all(
      this.servers.map(async (s, i) => {
        await this.revocations.readyToRead(i, indexId);
        return s.call('query', 'rangeSearch', { indexId, radius }, [data]);
      }),
    );
    return rec.mergeRange(replies, n, replies[0]?.result.metric ?? meta.metric);
  }

  /** Removes deleted vectors from FAISS on every server now (it also happens in the background); returns how many. */
  async compact(indexId: string): Promise<number> {
    const r = await this.all('bulk', 'compact', { indexId });
    return r.reduce((a, b) => a + b.removed, 0);
  }

  private recordCall(indexId: string) {
    return async <M extends 'deleteRecords' | 'getRecords' | 'iterateRecords'>(i: number, method: M, args: ArgsOf<M>) => {
      this.checkOpen();
      await this.revocations.readyToRead(i, indexId);
      return this.servers[i]!.call<M>(method === 'deleteRecords' ? 'bulk' : 'query', method, args);
    };
  }

  /** Stores records with ids: each on its home server, in parallel; upsert replaces older versions. */
  private async putRecords(indexId: string, ids: readonly RecordId[], vectors: VectorsInput | Uint16Array, metadata: readonly unknown[] | null | undefined, upsert: boolean, trainAsync: boolean): Promise<void> {
    const meta = await this.indexMeta(indexId);
    const { data, n } = batchMatrix(vectors, meta.dim);
    const list = rec.checkBatchIds(ids, n);
    await this.checkIdMode(indexId, meta, true);
    const trainings = await rec.sendByHome(
      {
        servers: this.servers,
        send: async (i, args, attachments) => {
          await this.acquireAddSlot();
          try {
            const reply = (await this.servers[i]!.call('bulk', 'addIndexData', { indexId, trainAsync, key: randomUUID(), ...args }, attachments)).result;
            return this.afterAdd(indexId, meta, i, reply);
          } finally {
            this.releaseAddSlot();
          }
        },
      },
      { data, dim: meta.dim, n, ids: list, metadata, upsert },
    );
    if (!trainAsync) await Promise.all(trainings.map((t) => t ?? Promise.resolve()));
  }

  /** Refuses a batch whose kind (with or without ids) differs from what the index holds. */
  private async checkIdMode(indexId: string, meta: IndexMeta, withIds: boolean): Promise<void> {
    if (meta.withIds == null) {
      const infos = await this.infos(indexId);
      const kinds = new Set(infos.flatMap((i) => (i && typeof i.withIds === 'boolean' ? [i.withIds] : [])));
      if (kinds.size === 1) meta.withIds = [...kinds][0]!;
    }
    if (meta.withIds != null && meta.withIds !== withIds) {
      throw new ValidationError(
        'ids',
        meta.withIds ? `one id per vector: index '${indexId}' stores records with ids (every batch must carry ids)` : `no ids: index '${indexId}' stores vectors without ids (batches with and without ids cannot be mixed; use a new index)`,
        withIds ? 'a batch with ids' : 'a batch without ids',
      );
    }
    meta.withIds ??= withIds;
  }

  /** Stores one batch on one server; returns the shared training this add started or joined, if any. */
  private async placeBatch(indexId: string, meta: IndexMeta, n: number, trainAsync: boolean, attachments: Parameters<ServerConn['call']>[3], control: CallControl = {}): Promise<{ training: Promise<void> | null }> {
    const failures: string[] = [];
    // Attempts on servers that failed while holding the batch: revoked there, and held
    // durably by the server that finally stores it (movedFrom), so no client has to outlive them.
    const moved: ReturnType<Revocations['queue']>[] = [];
    const movedFrom: Array<[number, string]> = [];
    // Placement advances by one per batch; the fallbacks of this batch walk on from its
    // own start (concurrent adds share meta.next, so it cannot drive the retries).
    const start = meta.next;
    meta.next = (meta.next + 1) % this.servers.length;
    // Each server at most once. A server known to be down never saw the batch. One that
    // failed while holding it may have stored it: that key is revoked there later, and the
    // next server gets a fresh attempt (fresh key), so the batch ends up visible once.
    for (let tried = 0; tried < this.servers.length; tried++) {
      const i = (start + tried) % this.servers.length;
      const server = this.servers[i]!;
      const key = randomUUID();
      let reply: AddReply;
      try {
        const args = { indexId, n, trainAsync, key, ...(movedFrom.length > 0 ? { movedFrom } : {}) };
        reply = (await server.call('bulk', 'addIndexData', args, attachments, control)).result;
        if (reply?.revoked) throw new ConnectionError(`${server.name} refused batch key ${key} as revoked`); // fresh keys: not expected
      } catch (err) {
        if (control.signal?.aborted) {
          // Aborted by the caller while the server may hold it: revoke it there, so an
          // aborted add leaves nothing behind (and the caller may resend it).
          this.revocations.queue(i, indexId, key);
          throw err;
        }
        if (!(err instanceof ConnectionError || err instanceof TimeoutError)) throw err;
        failures.push(`${server.name}: ${err.message}`);
        if (!(err instanceof ServerUnavailableError)) {
          moved.push(this.revocations.queue(i, indexId, key));
          if (server.rank !== undefined) movedFrom.push([server.rank, key]);
        }
        continue;
      }
      this.revocations.stored(moved, i);
      return { training: this.afterAdd(indexId, meta, i, reply) };
    }
    throw new ServerUnavailableError(
      this.servers.map((s) => s.name).join(', '),
      `batch not stored: every server failed (${failures.join('; ')}). Resend it once a server is back` +
        (moved.length > 0 ? '; servers that failed while holding it will be told to drop any copy they kept (pendingRevocations)' : ''),
    );
  }

  /**
   * Shared training starts once the cluster buffers trainNum vectors (the sum of the
   * servers' latest counts), or at once for a shard still untrained in a trained cluster
   * (one that was down during the install). Returns the training, if this add started or joined one.
   */
  private afterAdd(indexId: string, meta: IndexMeta, serverIdx: number, reply: AddReply): Promise<void> | null {
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
  async syncTrain(indexId: string): Promise<void> {
    const meta = await this.indexMeta(indexId);
    if (meta.sharedTraining) {
      await this.sharedTrain(indexId, meta);
      return;
    }
    // Per shard: a shard holding no vectors has nothing to train (it trains once data reaches
    // it); only a cluster without any vector is an error.
    const done = await this.all('bulk', 'syncTrain', { indexId }, { timeoutMs: this.trainTimeoutMs });
    if (!done.some((d) => d.trained)) throw new IndexStateError(`index '${indexId}' has no vectors to train on: add data before training`);
  }

  /**
   * Resolves once a shared training this client started (its adds reached trainNum, or
   * asyncTrain) is over; at once when there is none. It does not throw: see getState().
   */
  async trainingSettled(indexId: string): Promise<void> {
    await this.indexes.get(indexId)?.training?.catch(() => {});
  }

  /** Starts training and returns at once; poll getState() for TRAINED. */
  async asyncTrain(indexId: string): Promise<void> {
    const meta = await this.indexMeta(indexId);
    if (meta.sharedTraining) this.sharedTrain(indexId, meta).catch(() => {}); // shows as NOT_TRAINED; train again
    else await this.all('bulk', 'asyncTrain', { indexId });
  }

  /** One shared training per index at a time from this client; others join it. */
  private sharedTrain(indexId: string, meta: IndexMeta): Promise<void> {
    meta.training ??= this.runSharedTraining(indexId, meta).finally(() => {
      meta.training = null;
    });
    return meta.training;
  }

  private async runSharedTraining(indexId: string, meta: IndexMeta): Promise<void> {
    await runSharedTraining(this.servers, indexId, meta.dim, this.trainTimeoutMs);
    meta.clusterTrained = true;
  }

  /**
   * Finishes what a shared training left to do, judged from every shard's info (another
   * client may have started it and died): returns the training this client now runs or
   * joins, or null when nothing is due.
   */
  private finishTraining(indexId: string, meta: IndexMeta, infos: ReadonlyArray<ShardInfoReply | null>): Promise<void> | null {
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
  private checkTraining(indexId: string, meta: IndexMeta): void {
    if (!meta.sharedTraining || meta.training || this.closed) return;
    const now = Date.now();
    if (now - (this.trainingChecked.get(indexId) ?? 0) < this.reconnectIntervalMs) return;
    this.trainingChecked.set(indexId, now);
    this.infos(indexId).then(
      (infos) => void this.finishTraining(indexId, meta, infos),
      () => {},
    );
  }

  /** Every server's info for the index; null for servers that are down. */
  private async infos(indexId: string): Promise<Array<ShardInfoReply | null>> {
    this.checkOpen();
    return shardInfos(this.servers, indexId);
  }

  /** Adds every server's buffered vectors to its (trained) index. */
  async addBufferToIndex(indexId: string): Promise<void> {
    await this.all('bulk', 'addBufferToIndex', { indexId });
  }

  /** Cluster state with the original's aggregation rules. */
  async getState(indexId: string): Promise<IndexState> {
    const infos = await this.infos(indexId);
    const down = infos.flatMap((info, i) => (info ? [] : [this.servers[i]!.name]));
    if (down.length > 0) throw new ServerUnavailableError(down.join(', '), `cannot tell the state of '${indexId}': ${down.join(', ')} did not answer`);
    const live = infos as ShardInfoReply[];
    const meta = this.knownMeta(indexId, live[0]!);
    // A training under way (here, or left by a client that is gone) is TRAINING, never NOT_TRAINED.
    if (this.finishTraining(indexId, meta, live)) return IndexState.TRAINING;
    return clusterState(live, aggregateStates);
  }

  /** Searchable vectors across all servers; 0 for an unknown index. */
  async getNtotal(indexId: string): Promise<number> {
    const counts = await this.readAll('query', 'getNtotal', indexId);
    return counts.reduce((a, b) => a + b, 0);
  }

  /** Distinct metadata[customMetaIdIdx] values across all servers. */
  async getIds(indexId: string): Promise<Set<unknown>> {
    const lists = await this.readAll('bulk', 'getIds', indexId);
    return new Set(lists.flat());
  }

  /** Each server's IVF centroids (nlist x dim, row-major). */
  async getCentroids(indexId: string): Promise<Array<{ nlist: number; dim: number; data: Float32Array }>> {
    return Promise.all(
      this.servers.map(async (s) => {
        const r = await s.call('query', 'getCentroids', { indexId });
        return { ...r.result, data: r.attachments[0].slice() };
      }),
    );
  }

  /** Sets nprobe (efSearch for hnswsq) on every server: an integer from 1 to the index's list count. */
  async setNprobe(indexId: string, nprobe: number): Promise<void> {
    await this.setSearchParameter(indexId, 'nprobe', nprobe);
  }

  /**
   * Sets a FAISS search parameter cluster-wide. Which names an index type has and their
   * ranges are in docs/protocol.md ("Search parameters"): nprobe and max_codes (IVF),
   * efSearch and efConstruction (HNSW), ht (PQ), k_factor (IVFPQR), k_factor_rf (refine).
   * Anything else, or a value out of range, is a ValidationError here and on the servers;
   * the index keeps its previous value and stays searchable.
   */
  async setSearchParameter(indexId: string, name: string, value: number): Promise<void> {
    const meta = await this.indexMeta(indexId);
    if (meta.type) checkSearchParameter(meta.type, name, value);
    await this.all('query', 'setSearchParameter', { indexId, name, value });
  }

  /** OpenMP threads per server for FAISS calls. */
  async setOmpNumThreads(threads: number): Promise<void> {
    await this.all('query', 'setOmpNumThreads', { threads });
  }

  async saveIndex(indexId: string): Promise<void> {
    await this.all('bulk', 'saveIndex', { indexId });
  }

  /**
   * Loads the index on every server from its storage folder, as the original's
   * load_index(id, cfg=None, force_reload=True): an index already in memory is reloaded
   * (forceReload, the default) or, with forceReload false, kept unless a cfg different from
   * its own is given; a given cfg overrides the stored cfg.json and is saved as it.
   */
  async loadIndex(indexId: string, cfg?: Partial<IndexCfg> | null, forceReload = true): Promise<void> {
    const full = cfg ? defaultIndexCfg(cfg) : null;
    await this.all('bulk', 'loadIndex', { indexId, cfg: full && { ...full }, forceReload });
    this.indexes.delete(indexId);
  }

  /** Drops the index from memory and deletes its storage folder on every server. */
  async dropIndex(indexId: string): Promise<void> {
    await this.all('bulk', 'dropIndex', { indexId });
    this.indexes.delete(indexId);
    // The data is gone on every server: nothing left to revoke.
    this.revocations.forget(indexId);
  }

  /** Per-server status: indexes, states, counts, memory. */
  async status(): Promise<Array<{ address: ServerAddress } & StatusReply>> {
    const all = await Promise.all(
      this.servers.map(async (s) => ({ address: s.address, ...((await s.call('query', 'status', {})).result) })),
    );
    // Finish any shared training left unfinished, as every touch of an index does.
    const perIndex = all.map((s) => s.indexes);
    for (const indexId of new Set(perIndex.flatMap((p) => Object.keys(p)))) {
      const infos = perIndex.map((p) => p[indexId] ?? null);
      const first = infos.find((i): i is ShardInfoReply => i !== null)!;
      if (first.sharedTraining) this.finishTraining(indexId, this.knownMeta(indexId, first), infos);
    }
    return all;
  }

  /**
   * k nearest neighbours of each query across all servers. Each server returns its own
   * top-k; the client merges them with a heap using the index's own metric.
   */
  async search(indexId: string, queries: VectorsInput, k: number, opts: SearchOptions = {}): Promise<SearchResults> {
    const meta = await this.indexMeta(indexId);
    const { data, n } = toMatrix(queries, meta.dim, 'queries');
    checkK(k);
    const params = this.callParams(meta, opts.params);
    const filter = opts.filter === undefined ? undefined : checkFilter(opts.filter);
    const replies = await this.fanOutSearch(indexId, data, k, opts.returnEmbeddings ?? false, opts.allowPartial ?? false, params, callControl(opts), filter);
    if (replies.untrained) this.checkTraining(indexId, meta);
    const out = this.mergeReplies(replies.shards, n, k, meta, opts.returnEmbeddings ?? false);
    if (opts.allowPartial) out.missing = replies.missing;
    if (filter) out.matches = replies.matches;
    return out;
  }

  /**
   * Like search(), but only hits that pass the filter count, and k of them are returned
   * whenever k matching hits exist: the client over-fetches and, when too few survive,
   * searches again with a larger k until it has enough or the index is exhausted.
   */
  async searchWithFilter(indexId: string, queries: VectorsInput, k: number, filter: SearchFilter, opts: SearchOptions = {}): Promise<SearchResults> {
    const meta = await this.indexMeta(indexId);
    const { data, n } = toMatrix(queries, meta.dim, 'queries');
    checkK(k);
    const keep = filterPredicate(filter);
    const params = this.callParams(meta, opts.params);
    const withVectors = opts.returnEmbeddings ?? false;
    let fetchK = Math.min(MAX_K, k * 3);
    for (;;) {
      const replies = await this.fanOutSearch(indexId, data, fetchK, withVectors, opts.allowPartial ?? false, params, callControl(opts));
      if (replies.untrained) this.checkTraining(indexId, meta);
      const merged = this.mergeReplies(replies.shards, n, fetchK, meta, withVectors);
      const out: SearchResults = { scores: [], metadata: [], ...(withVectors ? { embeddings: [] } : {}), ...(merged.ids ? { ids: [] } : {}) };
      let short = false;
      for (let q = 0; q < n; q++) {
        const scores: number[] = [];
        const metas: unknown[] = [];
        const embs: Float32Array[] = [];
        const ids: Array<RecordId | null> = [];
        const row = merged.metadata[q]!;
        for (let i = 0; i < row.length && scores.length < k; i++) {
          if (!keep(row[i])) continue;
          scores.push(merged.scores[q]![i]!);
          metas.push(row[i]);
          if (merged.ids) ids.push(merged.ids[q]![i]!);
          if (withVectors) embs.push(merged.embeddings![q]![i]!);
        }
        out.ids?.push(ids);
        // Too few survivors, and the shards may hold more beyond fetchK: fetch deeper.
        if (scores.length < k && row.length === fetchK) short = true;
        out.scores.push(scores);
        out.metadata.push(metas);
        out.embeddings?.push(embs);
      }
      const exhausted = fetchK >= replies.ntotal || fetchK >= MAX_K;
      if (opts.allowPartial) out.missing = replies.missing;
      if (!short || exhausted) return out;
      fetchK = Math.min(MAX_K, fetchK * 2);
    }
  }

  /**
   * Closes every connection, after one bounded attempt (about 5 s) to deliver pending
   * revocations; any left are reported with a process warning (code DFAISS_UNREVOKED).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.awaitTrainings();
    const left = await this.revocations.close(CLOSE_FLUSH_MS);
    if (left.length > 0) {
      process.emitWarning(
        `dfaiss: ${left.length} batch revocation(s) could not be delivered to ${[...new Set(left.map((r) => r.server))].join(', ')} yet: ` +
          'the servers those batches moved to hold them too, and the next client that reads the index delivers them',
        { code: 'DFAISS_UNREVOKED', detail: JSON.stringify(left) },
      );
    }
    await Promise.allSettled(this.servers.map((s) => s.close()));
  }

  // ---- internals ----

  /** close(): waits (up to closeTimeoutMs) for the shared trainings this client runs. */
  private async awaitTrainings(): Promise<void> {
    const running = [...this.indexes].filter(([, m]) => m.training);
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      Promise.allSettled(running.map(([, m]) => m.training)).then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), this.closeTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (!finished) {
      const ids = running.filter(([, m]) => m.training).map(([id]) => `'${id}'`);
      process.emitWarning(
        `dfaiss: the shared training of ${ids.join(', ')} was still running after closeTimeoutMs (${this.closeTimeoutMs} ms); ` +
          'it goes on on its server, and the next client that touches the index (add, search, getState, status, syncTrain) installs it on every shard',
        { code: 'DFAISS_TRAINING_UNFINISHED' },
      );
    }
  }

  /** all(), for calls that read an index's data: pending revocations go first. */
  private async readAll<M extends 'getNtotal' | 'getIds'>(conn: ConnKind, method: M, indexId: string): Promise<Array<ResultOf<M>>> {
    this.checkOpen();
    // Revocations some shard holds that this client does not know go first (see fanOutSearch).
    // A server that does not answer, or lacks the index, holds none that matter here.
    const infos = await Promise.allSettled(this.servers.map((s) => s.call('query', 'getInfo', { indexId })));
    await this.learnHeld(indexId, infos.map((r) => (r.status === 'fulfilled' ? (r.value.result.heldRevocations ?? 0) : 0)));
    const results = await Promise.all(
      this.servers.map(async (s, i) => {
        await this.revocations.readyToRead(i, indexId);
        return s.call<M>(conn, method, { indexId } as ArgsOf<M>); // both take { indexId }
      }),
    );
    return results.map((r) => r.result);
  }

  /**
   * A fan-out search. A shard that holds revocations this client does not know yet (see
   * Revocations) may mean another shard's hits count a moved batch twice: they are fetched
   * and delivered, and the search runs once more.
   */
  private async fanOutSearch(indexId: string, queries: Float32Array, k: number, withVectors: boolean, allowPartial: boolean, params?: Record<string, number>, control: CallControl = {}, filter?: Filter) {
    const first = await this.fanOutSearchOnce(indexId, queries, k, withVectors, allowPartial, params, control, filter);
    if (!(await this.learnHeld(indexId, first.held))) return first;
    return this.fanOutSearchOnce(indexId, queries, k, withVectors, allowPartial, params, control, filter);
  }

  /** Fetches held revocations from each server reporting more than this client knows; true when there were new ones. */
  private async learnHeld(indexId: string, held: readonly number[]): Promise<boolean> {
    // Nearly always every count is 0: only then is the client's bookkeeping walked.
    const ask = held.flatMap((n, i) => (n > 0 && n > this.revocations.known(i, indexId) ? [i] : []));
    if (ask.length === 0) return false;
    const learned = await Promise.all(ask.map((i) => this.revocations.learn(i, indexId).catch(() => false)));
    return learned.some(Boolean);
  }

  private async fanOutSearchOnce(indexId: string, queries: Float32Array, k: number, withVectors: boolean, allowPartial: boolean, params?: Record<string, number>, control: CallControl = {}, filter?: Filter) {
    const settled = await Promise.allSettled(
      this.servers.map(async (s, i) => {
        await this.revocations.readyToRead(i, indexId);
        return s.call('query', 'search', { indexId, k, returnEmbeddings: withVectors, ...(params ? { params } : {}), ...(filter ? { filter } : {}) }, [queries], control);
      }),
    );
    const missing: Array<{ server: string; error: string }> = [];
    const replies = [];
    const held = settled.map((r) => (r.status === 'fulfilled' ? (r.value.result.held ?? 0) : 0));
    for (let i = 0; i < settled.length; i++) {
      const r = settled[i]!;
      if (r.status === 'fulfilled') replies.push(r.value);
      else if (allowPartial && r.reason instanceof ConnectionError) missing.push({ server: this.servers[i]!.name, error: (r.reason as Error).message });
      else throw r.reason;
    }
    if (replies.length === 0) throw new ServerUnavailableError(missing.map((m) => m.server).join(', '), `no server answered: ${missing.map((m) => `${m.server}: ${m.error}`).join('; ')}`);
    let ntotal = 0;
    let matches = 0;
    let trained = false;
    let untrained = false;
    const shards = replies.map((r) => {
      ntotal += r.result.ntotal;
      matches += r.result.filtered?.matches ?? 0;
      if (r.result.state === IndexState.NOT_TRAINED) untrained = true;
      if (r.result.ntotal > 0) trained = true;
      const att = r.attachments;
      const [distances, labels, blob, offBytes] = att;
      const vectors = withVectors ? (att[4] as Float32Array) : undefined;
      // Records with ids: each hit's id comes packed like metadata in the last two attachments.
      const ids = r.result.ids ? { blob: att[att.length - 2] as Uint8Array, offsets: offsetsView(att[att.length - 1] as Uint8Array) } : undefined;
      return { distances, labels, k, blob, offsets: offsetsView(offBytes), vectors, metric: r.result.metric, ids };
    });
    if (!trained) {
      const meta = this.indexes.get(indexId);
      if (meta && untrained) this.checkTraining(indexId, meta);
      throw new IndexStateError(`index '${indexId}' has no searchable vectors yet: add data and wait until getState() is TRAINED`);
    }
    return { shards, ntotal, missing, untrained, held, matches };
  }

  private mergeReplies(
    shards: Array<ShardHits & { blob: Uint8Array; offsets: Uint32Array; vectors?: Float32Array; metric: IndexMetric; ids?: { blob: Uint8Array; offsets: Uint32Array } }>,
    n: number,
    k: number,
    meta: IndexMeta,
    withVectors: boolean,
  ): SearchResults {
    const metric = shards[0]?.metric ?? meta.metric;
    const out: SearchResults = { scores: [], metadata: [], ...(withVectors ? { embeddings: [] } : {}) };
    const readers = shards.map((s) => metadataReader(s.blob, s.offsets));
    const idReaders = shards.some((s) => s.ids) ? shards.map((s) => (s.ids ? metadataReader(s.ids.blob, s.ids.offsets, 'ids') : () => null)) : null;
    if (idReaders) out.ids = [];
    const hits = mergeOutput(k);
    for (let q = 0; q < n; q++) {
      const count = mergeQueryInto(shards, q, k, metric, hits);
      const scores = new Array<number>(count);
      const metas = new Array<unknown>(count);
      const ids = idReaders ? new Array<RecordId | null>(count) : null;
      for (let i = 0; i < count; i++) {
        scores[i] = hits.score[i]!;
        metas[i] = readers[hits.shard[i]!]!(hits.slot[i]!);
        if (ids) ids[i] = (idReaders![hits.shard[i]!]!(hits.slot[i]!) ?? null) as RecordId | null;
      }
      out.scores.push(scores);
      out.metadata.push(metas);
      if (ids) out.ids!.push(ids);
      if (withVectors) {
        const embs = new Array<Float32Array>(count);
        for (let i = 0; i < count; i++) embs[i] = shards[hits.shard[i]!]!.vectors!.slice(hits.slot[i]! * meta.dim, (hits.slot[i]! + 1) * meta.dim);
        out.embeddings!.push(embs);
      }
    }
    return out;
  }

  /** Per-call search parameters, checked for the index type before anything is sent (the servers check again). */
  private callParams(meta: IndexMeta, params: Record<string, number> | undefined): Record<string, number> | undefined {
    if (params === undefined) return undefined;
    if (meta.type) checkCallSearchParams(meta.type, params);
    else if (typeof params !== 'object' || params === null) throw new ValidationError('params', 'an object of search parameters, e.g. { nprobe: 32 }', params);
    return Object.keys(params).length > 0 ? params : undefined;
  }

  /** Dimension and metric of an index: known from createIndex, else asked from a server. */
  private async indexMeta(indexId: string): Promise<IndexMeta> {
    this.checkOpen();
    const known = this.indexes.get(indexId);
    if (known) return known;
    // First touch of this index by this client: every shard's info, so a shared training
    // another client left unfinished is finished here.
    const infos = await this.infos(indexId);
    const first = infos.find((i): i is ShardInfoReply => i !== null);
    if (!first) throw await this.firstAnswer('getInfo', { indexId }).then(() => new ConnectionError(`no server answered about index '${indexId}'`), (err: unknown) => err); // all down: fails naming them
    const meta = this.knownMeta(indexId, first);
    infos.forEach((info, i) => {
      if (info) meta.buffered[i] = info.buffered;
      if (info && info.state !== IndexState.NOT_TRAINED && info.state !== IndexState.TRAINING) meta.clusterTrained = true;
    });
    this.finishTraining(indexId, meta, infos);
    return meta;
  }

  /** The index's meta, made from a shard's info when this client has none yet. */
  private knownMeta(indexId: string, info: ShardInfoReply): IndexMeta {
    let meta = this.indexes.get(indexId);
    if (!meta) {
      meta = this.newMeta(info.dim, info.metric, info.sharedTraining, info.trainNum, indexTypeOf(info));
      this.indexes.set(indexId, meta);
    }
    return meta;
  }

  private newMeta(dim: number, metric: IndexMetric, sharedTraining: boolean, trainNum: number, type: IndexTypeCfg | null): IndexMeta {
    return {
      dim,
      metric,
      next: Math.floor(Math.random() * this.servers.length),
      sharedTraining: sharedTraining === true,
      trainNum,
      buffered: new Array<number>(this.servers.length).fill(0),
      clusterTrained: false,
      training: null,
      type: type && { indexBuilderType: type.indexBuilderType, faissFactory: type.faissFactory, centroids: type.centroids, inferCentroids: type.inferCentroids },
    };
  }

  private async all<M extends MethodName>(conn: ConnKind, method: M, args: ArgsOf<M>, opts: { timeoutMs?: number } = {}): Promise<Array<ResultOf<M>>> {
    this.checkOpen();
    const results = await Promise.all(this.servers.map((s) => s.call<M>(conn, method, args, [], opts)));
    return results.map((r) => r.result);
  }

  /** The first live server's answer (for facts every server knows, like an index's dim). */
  private async firstAnswer<M extends MethodName>(method: M, args: ArgsOf<M>): Promise<ResultOf<M>> {
    let last: unknown;
    for (const s of this.servers) {
      try {
        return (await s.call<M>('query', method, args)).result;
      } catch (err) {
        if (!(err instanceof ConnectionError)) throw err;
        last = err;
      }
    }
    throw last;
  }

  private checkOpen(): void {
    if (this.closed) throw new ConnectionError('this IndexClient was closed; connect a new one');
  }

  private acquireAddSlot(signal?: AbortSignal): Promise<void> {
    if (this.addsInFlight < this.maxAddsInFlight) {
      this.addsInFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      // Aborted while waiting: leave the queue (the slot goes to the next add).
      const onAbort = (): void => {
        const i = this.addWaiters.indexOf(wake);
        if (i >= 0) this.addWaiters.splice(i, 1);
        reject(signal!.reason);
      };
      const wake = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      this.addWaiters.push(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private releaseAddSlot(): void {
    const next = this.addWaiters.shift();
    if (next) next();
    else this.addsInFlight--;
  }
}

type AddReply = { firstId: number; state: IndexState; buffered?: number; revoked?: boolean } | undefined;

/** A batch as a row-major matrix: float32 (validated, no copy when it is one) or float16 as it is. */
function batchMatrix(vectors: VectorsInput | Uint16Array, dim: number): { data: Float32Array | Uint16Array; n: number } {
  if (!(vectors instanceof Uint16Array)) return toMatrix(vectors, dim, 'vectors');
  if (vectors.length === 0 || vectors.length % dim !== 0) {
    throw new ValidationError('vectors', `a Uint16Array (float16) whose length is a positive multiple of dim=${dim}`, `length ${vectors.length}`);
  }
  return { data: vectors, n: vectors.length / dim };
}

function filterPredicate(filter: SearchFilter): (m: unknown) => boolean {
  if ('where' in filter) {
    if (typeof filter.where !== 'function') throw new ValidationError('filter.where', 'a function (metadata) => boolean', filter.where);
    return filter.where;
  }
  if (!Number.isSafeInteger(filter.filterPos) || filter.filterPos < 0) {
    throw new ValidationError('filter.filterPos', 'a non-negative integer position in the metadata', filter.filterPos);
  }
  const { filterPos, filterValue } = filter;
  return (m) => !(Array.isArray(m) && isEqual(m[filterPos], filterValue));
}

function isEqual(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** The index-type fields of a shard's info (to check search parameters before sending them). */
function indexTypeOf(info: ShardInfoReply): IndexTypeCfg | null {
  if (info.faissFactory === undefined) return null;
  return { indexBuilderType: info.indexBuilderType ?? null, faissFactory: info.faissFactory, centroids: info.centroids ?? 0, inferCentroids: info.inferCentroids ?? false };
}

/** The per-call options to pass on (a signal already aborted fails the call at once). */
function callControl(opts: CallControl): CallControl {
  if (opts.timeoutMs !== undefined && (!Number.isSafeInteger(opts.timeoutMs) || opts.timeoutMs < 0)) {
    throw new ValidationError('timeoutMs', 'a non-negative integer of milliseconds (0 = no deadline)', opts.timeoutMs);
  }
  opts.signal?.throwIfAborted();
  return { ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}), ...(opts.signal ? { signal: opts.signal } : {}) };
}
