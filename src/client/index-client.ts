/**
 * IndexClient: all coordination lives here. Places batches on servers round-robin, fans
 * every search out to all servers and merges the top-k, aggregates states and counts.
 * Each server gets two connections: one for bulk traffic (adds, training, saves) and one
 * for searches and small calls, so a search never queues behind a 16 MiB batch.
 */
import { checkSearchParameter, defaultIndexCfg, type IndexCfg, type IndexTypeCfg } from '../config/index.js';
import { randomUUID } from 'node:crypto';
import { ConnectionError, IndexStateError, ServerUnavailableError, TimeoutError, ValidationError } from '../errors.js';
import { MAX_K, toMatrix, type Metric, type VectorsInput } from '../native/index.js';
import type { RpcClientOptions } from '../protocol/index.js';
import { encodeMetadata, metadataReader, offsetsBytes, offsetsView } from '../protocol/metadata.js';
import { aggregateStates, type IndexState } from '../shard/state.js';
import { readDiscovery, type ServerAddress } from './discovery.js';
import { mergeOutput, mergeQueryInto, type ShardHits } from './merge.js';
import { ServerConn, type ConnKind } from './server-conn.js';
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
}

export interface SearchOptions {
  /** Also return each hit's stored vector. @default false */
  returnEmbeddings?: boolean;
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
  /** Per query, each hit's vector, with returnEmbeddings. */
  embeddings?: Float32Array[][];
  /** With allowPartial: the servers whose shards are missing from these results, and why. */
  missing?: Array<{ server: string; error: string }>;
}

export type SearchFilter =
  /** The original's form: drop hits whose metadata[filterPos] equals filterValue. */
  | { filterPos: number; filterValue: unknown }
  /** Keep only hits whose metadata passes the predicate. */
  | { where: (metadata: unknown) => boolean };

export interface AddOptions {
  /** Training triggered by this batch runs in the background (true) or before the call returns. @default true */
  trainAsync?: boolean;
}

/** A batch this client moved away from `server` after it failed while holding it. */
export interface PendingRevocation {
  server: string;
  indexId: string;
  /** The batch's idempotency key on that server. */
  key: string;
}

/** How long close() tries to deliver pending revocations. */
const CLOSE_FLUSH_MS = 5000;

interface IndexMeta {
  dim: number;
  metric: Metric;
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

interface ServerInfo {
  state: IndexState;
  dim: number;
  metric: Metric;
  buffered: number;
  sharedTraining: boolean;
  trainNum: number;
  trainRatio: number;
  indexBuilderType?: IndexTypeCfg['indexBuilderType'];
  faissFactory?: IndexTypeCfg['faissFactory'];
  centroids?: number;
  inferCentroids?: boolean;
}

export class IndexClient {
  private readonly servers: ServerConn[];
  private readonly indexes = new Map<string, IndexMeta>();
  private readonly maxAddsInFlight: number;
  private readonly trainTimeoutMs: number;
  private readonly reconnectIntervalMs: number;
  /** Per server (same order as `servers`): batch keys to revoke there once it is reachable. */
  private readonly revocations: Array<Array<{ indexId: string; key: string }>>;
  private readonly flushing: Array<Promise<void> | null>;
  private retryTimer: NodeJS.Timeout | null = null;
  private addsInFlight = 0;
  private readonly addWaiters: Array<() => void> = [];
  private closed = false;

  private constructor(servers: ServerConn[], opts: IndexClientOptions) {
    this.servers = servers;
    this.maxAddsInFlight = Math.max(1, opts.maxAddsInFlight ?? 2 * servers.length);
    this.trainTimeoutMs = opts.trainTimeoutMs ?? 3_600_000;
    this.reconnectIntervalMs = opts.reconnectIntervalMs ?? 1000;
    this.revocations = servers.map(() => []);
    this.flushing = servers.map(() => null);
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
   * reconnectIntervalMs and before this client reads from that server). Until confirmed,
   * such a batch may exist there too; if this client ends first, it may stay twice.
   */
  get pendingRevocations(): PendingRevocation[] {
    return this.revocations.flatMap((list, i) => list.map((r) => ({ server: this.servers[i]!.name, ...r })));
  }

  /** Creates the index on every server (a no-op where it exists with the same cfg). */
  async createIndex(indexId: string, cfg: Partial<IndexCfg> | IndexCfg = {}): Promise<void> {
    const full = defaultIndexCfg(cfg);
    const created = await this.all<{ sharedTraining: boolean }>('bulk', 'createIndex', { indexId, cfg: full as unknown as Record<string, unknown> });
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
    const meta = await this.indexMeta(indexId);
    let data: Float32Array | Uint16Array;
    let n: number;
    if (vectors instanceof Uint16Array) {
      if (vectors.length === 0 || vectors.length % meta.dim !== 0) {
        throw new ValidationError('vectors', `a Uint16Array (float16) whose length is a positive multiple of dim=${meta.dim}`, `length ${vectors.length}`);
      }
      data = vectors;
      n = vectors.length / meta.dim;
    } else {
      ({ data, n } = toMatrix(vectors, meta.dim, 'vectors'));
    }
    const { blob, offsets } = encodeMetadata(metadata, n);
    const attachments = [data, blob, offsetsBytes(offsets)];
    const trainAsync = opts.trainAsync ?? true;
    let training: Promise<void> | null = null;
    await this.acquireAddSlot();
    try {
      ({ training } = await this.placeBatch(indexId, meta, n, trainAsync, attachments));
    } finally {
      this.releaseAddSlot();
    }
    if (training && !trainAsync) await training;
  }

  /** Stores one batch on one server; returns the shared training this add started or joined, if any. */
  private async placeBatch(indexId: string, meta: IndexMeta, n: number, trainAsync: boolean, attachments: Parameters<ServerConn['call']>[3]): Promise<{ training: Promise<void> | null }> {
    const failures: string[] = [];
    let revoking = false;
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
        reply = (await server.call<AddReply>('bulk', 'addIndexData', { indexId, n, trainAsync, key }, attachments)).result;
        if (reply?.revoked) throw new ConnectionError(`${server.name} refused batch key ${key} as revoked`); // fresh keys: not expected
      } catch (err) {
        if (!(err instanceof ConnectionError || err instanceof TimeoutError)) throw err;
        failures.push(`${server.name}: ${err.message}`);
        if (!(err instanceof ServerUnavailableError)) {
          this.queueRevocation(i, indexId, key);
          revoking = true;
        }
        continue;
      }
      return { training: this.afterAdd(indexId, meta, i, reply) };
    }
    throw new ServerUnavailableError(
      this.servers.map((s) => s.name).join(', '),
      `batch not stored: every server failed (${failures.join('; ')}). Resend it once a server is back` +
        (revoking ? '; servers that failed while holding it will be told to drop any copy they kept (pendingRevocations)' : ''),
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
    if (meta.sharedTraining) await this.sharedTrain(indexId, meta);
    else await this.all('bulk', 'syncTrain', { indexId }, { timeoutMs: this.trainTimeoutMs });
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

  /**
   * Shared training: (1) a sample drawn across shards in proportion to their buffers,
   * (2) one training on one server, which returns its centroids, (3) installed on every
   * other untrained shard. The trainer is the first server already trained (so a
   * late shard gets the same centroids) or else the first listed one, so concurrent
   * clients pick the same server, which runs a single training for all of them.
   */
  private async runSharedTraining(indexId: string, meta: IndexMeta): Promise<void> {
    const timeoutMs = this.trainTimeoutMs;
    // Servers that are down are left out: they get the trained index when they are back.
    const settled = await Promise.allSettled(
      this.servers.map((s) => s.call<ServerInfo>('query', 'getInfo', { indexId }).then((r) => r.result)),
    );
    const down: string[] = [];
    const infos = settled.map((r, i) => {
      if (r.status === 'fulfilled') return r.value;
      if (!(r.reason instanceof ConnectionError)) throw r.reason;
      down.push(this.servers[i]!.name);
      return null;
    });
    const live = infos.flatMap((info, i) => (info ? [i] : []));
    if (live.length === 0) throw new ServerUnavailableError(down.join(', '), `no server answered to train index '${indexId}': ${down.join(', ')} down`);
    const untrained = live.filter((i) => infos[i]!.state === 'NOT_TRAINED');
    let trainer = live.find((i) => infos[i]!.state !== 'NOT_TRAINED') ?? -1;
    let sample = new Float32Array(0);
    if (untrained.length > 0 && trainer < 0) {
      trainer = live[0]!;
      const total = live.reduce((a, i) => a + infos[i]!.buffered, 0);
      if (total === 0) throw new IndexStateError(`index '${indexId}' has no vectors to train on: add data before training`);
      const { trainNum, trainRatio } = infos[trainer]!;
      const wanted = trainNum > 0 ? Math.min(trainNum, total) : Math.max(1, Math.floor(total * trainRatio));
      const parts = await Promise.all(
        this.servers.map(async (s, i) => {
          const count = infos[i] ? Math.ceil((wanted * infos[i].buffered) / total) : 0;
          if (count === 0) return new Float32Array(0);
          const r = await s.call('bulk', 'sampleVectors', { indexId, count }, [], { timeoutMs });
          return r.attachments[0] as Float32Array;
        }),
      );
      sample = new Float32Array(Math.min(wanted, parts.reduce((a, p) => a + p.length / meta.dim, 0)) * meta.dim);
      let off = 0;
      for (const p of parts) {
        const take = p.subarray(0, Math.min(p.length, sample.length - off));
        sample.set(take, off);
        off += take.length;
      }
    }
    if (untrained.length > 0) {
      const trained = await this.servers[trainer]!.call('bulk', 'trainShared', { indexId }, [sample], { timeoutMs });
      const centroids = trained.attachments[0] as Float32Array;
      await Promise.all(
        untrained.filter((i) => i !== trainer).map((i) => this.servers[i]!.call('bulk', 'installTrained', { indexId }, [centroids], { timeoutMs })),
      );
      meta.clusterTrained = true;
    }
    if (down.length > 0) {
      throw new ServerUnavailableError(down.join(', '), `index '${indexId}' is trained on the live servers; ${down.join(', ')} did not answer and get the trained index when they are back`);
    }
  }

  /** Adds every server's buffered vectors to its (trained) index. */
  async addBufferToIndex(indexId: string): Promise<void> {
    await this.all('bulk', 'addBufferToIndex', { indexId });
  }

  /** Cluster state with the original's aggregation rules. */
  async getState(indexId: string): Promise<IndexState> {
    const states = await this.all<IndexState>('query', 'getState', { indexId });
    return aggregateStates(states);
  }

  /** Searchable vectors across all servers; 0 for an unknown index. */
  async getNtotal(indexId: string): Promise<number> {
    const counts = await this.readAll<number>('query', 'getNtotal', indexId);
    return counts.reduce((a, b) => a + b, 0);
  }

  /** Distinct metadata[customMetaIdIdx] values across all servers. */
  async getIds(indexId: string): Promise<Set<unknown>> {
    const lists = await this.readAll<unknown[]>('bulk', 'getIds', indexId);
    return new Set(lists.flat());
  }

  /** Each server's IVF centroids (nlist x dim, row-major). */
  async getCentroids(indexId: string): Promise<Array<{ nlist: number; dim: number; data: Float32Array }>> {
    return Promise.all(
      this.servers.map(async (s) => {
        const r = await s.call<{ nlist: number; dim: number }>('query', 'getCentroids', { indexId });
        return { ...r.result, data: (r.attachments[0] as Float32Array).slice() };
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
    await this.all('bulk', 'loadIndex', { indexId, cfg: full as unknown as Record<string, unknown> | null, forceReload });
    this.indexes.delete(indexId);
  }

  /** Drops the index from memory and deletes its storage folder on every server. */
  async dropIndex(indexId: string): Promise<void> {
    await this.all('bulk', 'dropIndex', { indexId });
    this.indexes.delete(indexId);
    // The data is gone on every server: nothing left to revoke.
    for (const list of this.revocations) for (let j = list.length - 1; j >= 0; j--) if (list[j]!.indexId === indexId) list.splice(j, 1);
  }

  /** Per-server status: indexes, states, counts, memory. */
  async status(): Promise<Array<{ address: ServerAddress } & Record<string, unknown>>> {
    return Promise.all(
      this.servers.map(async (s) => ({ address: s.address, ...((await s.call<Record<string, unknown>>('query', 'status', {})).result) })),
    );
  }

  /**
   * k nearest neighbours of each query across all servers. Each server returns its own
   * top-k; the client merges them with a heap using the index's own metric.
   */
  async search(indexId: string, queries: VectorsInput, k: number, opts: SearchOptions = {}): Promise<SearchResults> {
    const meta = await this.indexMeta(indexId);
    const { data, n } = toMatrix(queries, meta.dim, 'queries');
    checkK(k);
    const replies = await this.fanOutSearch(indexId, data, k, opts.returnEmbeddings ?? false, opts.allowPartial ?? false);
    const out = this.mergeReplies(replies.shards, n, k, meta, opts.returnEmbeddings ?? false);
    if (opts.allowPartial) out.missing = replies.missing;
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
    const withVectors = opts.returnEmbeddings ?? false;
    let fetchK = Math.min(MAX_K, k * 3);
    for (;;) {
      const replies = await this.fanOutSearch(indexId, data, fetchK, withVectors, opts.allowPartial ?? false);
      const merged = this.mergeReplies(replies.shards, n, fetchK, meta, withVectors);
      const out: SearchResults = { scores: [], metadata: [], ...(withVectors ? { embeddings: [] } : {}) };
      let short = false;
      for (let q = 0; q < n; q++) {
        const scores: number[] = [];
        const metas: unknown[] = [];
        const embs: Float32Array[] = [];
        const row = merged.metadata[q]!;
        for (let i = 0; i < row.length && scores.length < k; i++) {
          if (!keep(row[i])) continue;
          scores.push(merged.scores[q]![i]!);
          metas.push(row[i]);
          if (withVectors) embs.push(merged.embeddings![q]![i]!);
        }
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
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.pendingRevocations.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(this.servers.map((_, i) => this.flushRevocations(i))),
        new Promise((r) => (timer = setTimeout(r, CLOSE_FLUSH_MS))),
      ]);
      clearTimeout(timer);
      const left = this.pendingRevocations;
      if (left.length > 0) {
        process.emitWarning(
          `dfaiss: ${left.length} batch revocation(s) could not be delivered to ${[...new Set(left.map((r) => r.server))].join(', ')}: ` +
            'those batches were moved to another server (or their add failed) when that server failed while holding them; ' +
            'if it had stored them, its copy stays and the batch may exist twice',
          { code: 'DFAISS_UNREVOKED', detail: JSON.stringify(left) },
        );
      }
    }
    await Promise.allSettled(this.servers.map((s) => s.close()));
  }

  // ---- internals ----

  // ---- batch revocations ----

  private queueRevocation(i: number, indexId: string, key: string): void {
    this.revocations[i]!.push({ indexId, key });
    void this.flushRevocations(i);
  }

  /**
   * Sends server i its pending revocations, oldest first, on the bulk connection; stops at
   * the first failure and schedules a retry. Never rejects.
   */
  private flushRevocations(i: number): Promise<void> {
    if (this.revocations[i]!.length === 0) return Promise.resolve();
    this.flushing[i] ??= (async () => {
      const list = this.revocations[i]!;
      try {
        while (list.length > 0) {
          const item = list[0]!;
          await this.servers[i]!.call('bulk', 'revokeBatch', item);
          if (list[0] === item) list.shift();
        }
      } catch {
        // Down, or the index is not loaded there (yet): keep it and try again later.
        this.scheduleRevocationRetry();
      } finally {
        this.flushing[i] = null;
      }
    })();
    return this.flushing[i]!;
  }

  /** One timer for all servers, every reconnectIntervalMs while anything is pending. */
  private scheduleRevocationRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      for (let i = 0; i < this.servers.length; i++) void this.flushRevocations(i);
    }, this.reconnectIntervalMs);
    this.retryTimer.unref();
  }

  /**
   * Before reading index data from server i: deliver its pending revocations for this index.
   * If they cannot be delivered, its answer could count a batch twice, so the server counts
   * as failed for this call (allowPartial lists it as missing).
   */
  private async readyToRead(i: number, indexId: string): Promise<void> {
    if (!this.revocations[i]!.some((r) => r.indexId === indexId)) return;
    await this.flushRevocations(i);
    if (this.revocations[i]!.some((r) => r.indexId === indexId)) {
      const name = this.servers[i]!.name;
      throw new ServerUnavailableError(
        name,
        `server ${name} has not yet confirmed revoking batches of '${indexId}' that this client moved to other servers when it failed; its answer could count them twice (retrying every ${this.reconnectIntervalMs} ms)`,
      );
    }
  }

  /** all(), for calls that read an index's data: pending revocations go first. */
  private async readAll<R>(conn: ConnKind, method: string, indexId: string): Promise<R[]> {
    this.checkOpen();
    const results = await Promise.all(
      this.servers.map(async (s, i) => {
        await this.readyToRead(i, indexId);
        return s.call<R>(conn, method, { indexId });
      }),
    );
    return results.map((r) => r.result);
  }

  private async fanOutSearch(indexId: string, queries: Float32Array, k: number, withVectors: boolean, allowPartial: boolean) {
    const settled = await Promise.allSettled(
      this.servers.map(async (s, i) => {
        await this.readyToRead(i, indexId);
        return s.call<{ n: number; k: number; metric: Metric; ntotal: number }>('query', 'search', { indexId, k, returnEmbeddings: withVectors }, [queries]);
      }),
    );
    const missing: Array<{ server: string; error: string }> = [];
    const replies = [];
    for (let i = 0; i < settled.length; i++) {
      const r = settled[i]!;
      if (r.status === 'fulfilled') replies.push(r.value);
      else if (allowPartial && r.reason instanceof ConnectionError) missing.push({ server: this.servers[i]!.name, error: (r.reason as Error).message });
      else throw r.reason;
    }
    if (replies.length === 0) throw new ServerUnavailableError(missing.map((m) => m.server).join(', '), `no server answered: ${missing.map((m) => `${m.server}: ${m.error}`).join('; ')}`);
    let ntotal = 0;
    let trained = false;
    const shards = replies.map((r) => {
      ntotal += r.result.ntotal;
      if (r.result.ntotal > 0) trained = true;
      const [distances, labels, blob, offBytes, vectors] = r.attachments as [Float32Array, BigInt64Array, Uint8Array, Uint8Array, Float32Array?];
      return { distances, labels, k, blob, offsets: offsetsView(offBytes), vectors, metric: r.result.metric };
    });
    if (!trained) {
      throw new IndexStateError(`index '${indexId}' has no searchable vectors yet: add data and wait until getState() is TRAINED`);
    }
    return { shards, ntotal, missing };
  }

  private mergeReplies(
    shards: Array<ShardHits & { blob: Uint8Array; offsets: Uint32Array; vectors?: Float32Array; metric: Metric }>,
    n: number,
    k: number,
    meta: IndexMeta,
    withVectors: boolean,
  ): SearchResults {
    const metric = shards[0]?.metric ?? meta.metric;
    const out: SearchResults = { scores: [], metadata: [], ...(withVectors ? { embeddings: [] } : {}) };
    const readers = shards.map((s) => metadataReader(s.blob, s.offsets));
    const hits = mergeOutput(k);
    for (let q = 0; q < n; q++) {
      const count = mergeQueryInto(shards, q, k, metric, hits);
      const scores = new Array<number>(count);
      const metas = new Array<unknown>(count);
      for (let i = 0; i < count; i++) {
        scores[i] = hits.score[i]!;
        metas[i] = readers[hits.shard[i]!]!(hits.slot[i]!);
      }
      out.scores.push(scores);
      out.metadata.push(metas);
      if (withVectors) {
        const embs = new Array<Float32Array>(count);
        for (let i = 0; i < count; i++) embs[i] = shards[hits.shard[i]!]!.vectors!.slice(hits.slot[i]! * meta.dim, (hits.slot[i]! + 1) * meta.dim);
        out.embeddings!.push(embs);
      }
    }
    return out;
  }

  /** Dimension and metric of an index: known from createIndex, else asked from a server. */
  private async indexMeta(indexId: string): Promise<IndexMeta> {
    this.checkOpen();
    let meta = this.indexes.get(indexId);
    if (!meta) {
      const info = await this.firstAnswer<ServerInfo>('getInfo', { indexId });
      const type = info.faissFactory !== undefined ? { indexBuilderType: info.indexBuilderType ?? null, faissFactory: info.faissFactory, centroids: info.centroids ?? 0, inferCentroids: info.inferCentroids ?? false } : null;
      meta = this.newMeta(info.dim, info.metric, info.sharedTraining, info.trainNum, type);
      this.indexes.set(indexId, meta);
    }
    return meta;
  }

  private newMeta(dim: number, metric: Metric, sharedTraining: boolean, trainNum: number, type: IndexTypeCfg | null): IndexMeta {
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

  private async all<R>(conn: ConnKind, method: string, args: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<R[]> {
    this.checkOpen();
    const results = await Promise.all(this.servers.map((s) => s.call<R>(conn, method, args, [], opts)));
    return results.map((r) => r.result);
  }

  /** The first live server's answer (for facts every server knows, like an index's dim). */
  private async firstAnswer<R>(method: string, args: Record<string, unknown>): Promise<R> {
    let last: unknown;
    for (const s of this.servers) {
      try {
        return (await s.call<R>('query', method, args)).result;
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

  private acquireAddSlot(): Promise<void> {
    if (this.addsInFlight < this.maxAddsInFlight) {
      this.addsInFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.addWaiters.push(resolve));
  }

  private releaseAddSlot(): void {
    const next = this.addWaiters.shift();
    if (next) next();
    else this.addsInFlight--;
  }
}

type AddReply = { firstId: number; state: IndexState; buffered?: number; revoked?: boolean } | undefined;

function checkK(k: number): void {
  if (!Number.isSafeInteger(k) || k <= 0 || k > MAX_K) throw new ValidationError('k', `an integer between 1 and ${MAX_K}`, k);
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

