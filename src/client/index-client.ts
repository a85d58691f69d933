/**
 * IndexClient: all coordination lives in the client, and this class is its facade. The
 * parts: connections.ts (the servers, two connections each: bulk and query), placement.ts
 * (where a batch goes), search-ops.ts (the searches) over fan-out.ts + merge.ts (search on
 * every server, heap merge) and filter.ts (the client-side filter loop), training-trigger.ts +
 * training.ts (shared training), revocations.ts (batches moved off a failed server),
 * record-ops.ts + records.ts (records with ids).
 */
import { defaultIndexCfg, type IndexCfg } from '../config/index-cfg.js';
import { checkSearchParameter } from '../config/search-params.js';
import { EventEmitter } from 'node:events';
import { ConnectionError, ServerUnavailableError, ValidationError } from '../errors.js';
import type { VectorsInput } from '../vectors.js';
import type { RpcClientOptions } from '../protocol/index.js';
import { encodeMetadata, offsetsBytes } from '../protocol/metadata.js';
import { aggregateStates, IndexState } from '../shard/state.js';
import { readDiscovery, stderrLog, type ServerAddress } from '../discovery/discovery-file.js';
import type { DeleteResult, GetResult, IteratePage, RangeSearchResults, RecordId } from './records.js';
import type { ShardOperation } from '../shard-operation.js';
import { Revocations, type PendingRevocation } from './revocations.js';
import { clusterState } from './training.js';
import type { ShardInfoReply, StatusReply } from '../contract.js';
import { rpcClientSecurityOptions } from './security-options.js';
import type {
  AddOptions,
  DeleteSelector,
  GetOptions,
  IndexClientEvents,
  IndexClientOptions,
  IterateOptions,
  SearchFilter,
  SearchOptions,
  SearchResults,
} from './api.js';
import { AddSlots } from './add-slots.js';
import { callControl, untilAborted, type CallControl } from './call-control.js';
import { Connections } from './connections.js';
import { readEverywhere } from './fan-out.js';
import { metaFromInfo, newMeta, type IndexMeta } from './index-meta.js';
import { batchMatrix, busyPolicy, checkIdMode, placeBatch, type BusyPolicy } from './placement.js';
import { RecordOps } from './record-ops.js';
import { SearchOps } from './search-ops.js';
import { TrainingTrigger } from './training-trigger.js';
import { IndexHandle } from './index-handle.js';

/** How long close() tries to deliver pending revocations. */
const CLOSE_FLUSH_MS = 5000;

export class IndexClient extends EventEmitter<IndexClientEvents> {
  private readonly conns: Connections;
  private readonly servers: readonly ShardOperation[];
  private readonly indexes = new Map<string, IndexMeta>();
  private readonly revocations: Revocations;
  private readonly slots: AddSlots;
  private readonly busy: BusyPolicy;
  private readonly training: TrainingTrigger;
  private readonly searches: SearchOps;
  private readonly records: RecordOps;

  private constructor(conns: Connections, opts: IndexClientOptions) {
    super();
    this.conns = conns;
    this.servers = conns.servers;
    for (const s of this.servers) {
      s.onStateChange = (up, error) => {
        // Without a listener an 'error'-like event would be lost anyway; these never throw.
        if (up) this.emit('serverUp', { server: s.name });
        else this.emit('serverDown', { server: s.name, error: error! });
      };
    }
    const reconnectIntervalMs = opts.reconnectIntervalMs ?? 1000;
    this.slots = new AddSlots(Math.max(1, opts.maxAddsInFlight ?? 2 * this.servers.length));
    this.busy = busyPolicy(opts.busyRetryMs, opts.log ?? stderrLog, (server, error) => this.emit('serverBusy', { server, error }));
    this.revocations = new Revocations(this.servers, reconnectIntervalMs);
    this.training = new TrainingTrigger(conns, {
      trainTimeoutMs: opts.trainTimeoutMs ?? 3_600_000,
      reconnectIntervalMs,
      closeTimeoutMs: opts.closeTimeoutMs ?? 120_000,
    });
    this.searches = new SearchOps(this.servers, this.revocations, this.training, this.indexes, opts.sharedQuantize ?? 'auto');
    this.records = new RecordOps(conns, this.revocations, this.slots, this.busy, this.training, (indexId, control) => this.indexMeta(indexId, control));
  }

  /** Reads the discovery file (waiting until every server is listed) and connects to all servers. */
  static async connect(discoveryConfig: string, opts: IndexClientOptions = {}): Promise<IndexClient> {
    const addresses = await readDiscovery(discoveryConfig, { timeoutMs: opts.discoveryTimeoutMs, log: opts.log, logIntervalMs: opts.discoveryLogIntervalMs });
    return IndexClient.connectTo(addresses, opts);
  }

  /** Connects to an explicit list of servers. */
  static async connectTo(addresses: readonly ServerAddress[], opts: IndexClientOptions = {}): Promise<IndexClient> {
    const rpcOpts: RpcClientOptions = {
      callTimeoutMs: opts.callTimeoutMs ?? 120_000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 10_000,
      clientName: opts.clientName ?? `dfaiss-client-${process.pid}`,
      ...rpcClientSecurityOptions(opts),
    };
    return new IndexClient(await Connections.open(addresses, rpcOpts, opts.reconnectIntervalMs ?? 1000), opts);
  }

  /**
   * A client over shards given as they are (see ShardOperation): RemoteShards it did not
   * connect itself, or LocalShards (a server's shards in this process, as tests use them).
   * close() closes them.
   */
  static withShards(shards: readonly ShardOperation[], opts: IndexClientOptions = {}): IndexClient {
    if (shards.length === 0) throw new ValidationError('shards', 'at least one shard');
    return new IndexClient(new Connections(shards), opts);
  }

  /**
   * A handle on one index whose calls carry `M`, the metadata type, e.g.
   * `client.index<{ title: string }>('docs').search(q, 10)` gives typed `metadata`.
   */
  index<M = unknown>(indexId: string): IndexHandle<M> {
    return new IndexHandle<M>(this, indexId);
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
  async createIndex(indexId: string, cfg: Partial<IndexCfg> | IndexCfg = {}, opts: CallControl = {}): Promise<void> {
    const full = defaultIndexCfg(cfg);
    const created = await this.conns.all('bulk', 'createIndex', { indexId, cfg: { ...full } }, callControl(opts));
    this.indexes.set(indexId, newMeta(this.servers.length, full.dim, full.metric, created[0]!.sharedTraining, full.trainNum, full));
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
    const control = callControl(opts);
    if (opts.ids !== undefined) return this.records.put(indexId, opts.ids, vectors, metadata, false, opts.trainAsync ?? true, control);
    const meta = await this.indexMeta(indexId, control);
    await checkIdMode(this.conns, indexId, meta, false, control);
    const { data, n } = batchMatrix(vectors, meta.dim);
    const { blob, offsets } = encodeMetadata(metadata, n);
    const attachments = [data, blob, offsetsBytes(offsets)];
    const trainAsync = opts.trainAsync ?? true;
    const placed = await this.slots.with(() => placeBatch(this.servers, this.revocations, { indexId, meta, n, trainAsync, attachments }, control, this.busy), control.signal);
    const training = this.training.afterAdd(indexId, meta, placed.server, placed.reply);
    if (training && !trainAsync) await untilAborted(training, control.signal);
  }

  /**
   * Replaces records by id (adds those that do not exist). Each record goes to its home
   * server (see records.ts), which replaces the old version in the same WAL record. When
   * this resolves, reads (search, get, iterate) see only the new versions. If the client
   * dies midway, every record is the old or the new version, never both, never neither.
   */
  async upsert(indexId: string, ids: readonly RecordId[], vectors: VectorsInput | Uint16Array, metadata?: readonly unknown[], opts: CallControl = {}): Promise<void> {
    await this.records.put(indexId, ids, vectors, metadata, true, true, callControl(opts));
  }

  /**
   * Deletes records by id on every server, or every record a declarative filter admits
   * ({ filter }, docs/filters.md); durable when it resolves. Unknown ids are reported.
   */
  async delete(indexId: string, selector: DeleteSelector, opts: CallControl = {}): Promise<DeleteResult> {
    return this.records.delete(indexId, selector, callControl(opts));
  }

  /** Records by id, from whichever server holds them; ids nobody holds are listed in `unknown`. */
  async get(indexId: string, ids: readonly RecordId[], opts: GetOptions = {}): Promise<GetResult> {
    return this.records.get(indexId, ids, opts, callControl(opts));
  }

  /**
   * Every stored record, page by page (server by server, in storage order). Each page has a
   * cursor: iterate(indexId, { cursor }) resumes after it (records stored meanwhile are
   * seen if they land after the cursor). Deleted and replaced records are skipped.
   */
  async *iterate(indexId: string, opts: IterateOptions = {}): AsyncGenerator<IteratePage> {
    yield* this.records.iterate(indexId, opts, callControl(opts));
  }

  /**
   * Every stored vector within `radius` of each query (FAISS range_search on every shard,
   * merged per query, best first): squared L2 distance below radius for 'l2', inner
   * product / cosine similarity above it for 'dot' / 'cosine'. Index types without range
   * search (HNSW, PQ) fail with a FaissError saying so.
   */
  async rangeSearch(indexId: string, queries: VectorsInput, radius: number, opts: CallControl = {}): Promise<RangeSearchResults> {
    const control = callControl(opts);
    return this.searches.rangeSearch(indexId, await this.indexMeta(indexId, control), queries, radius, control);
  }

  /** Removes deleted vectors from FAISS on every server now (it also happens in the background); returns how many. */
  async compact(indexId: string, opts: CallControl = {}): Promise<number> {
    const r = await this.conns.all('bulk', 'compact', { indexId }, callControl(opts));
    return r.reduce((a, b) => a + b.removed, 0);
  }

  /**
   * Trains now on the buffered data and resolves when every shard is trained: once on a
   * sample drawn across shards with trainMode 'shared', else each shard on its own buffer.
   */
  async syncTrain(indexId: string, opts: CallControl = {}): Promise<void> {
    const control = callControl(opts);
    const meta = await this.indexMeta(indexId, control);
    await untilAborted(this.training.syncTrain(indexId, meta, control), control.signal);
  }

  /**
   * Resolves once a shared training this client started (its adds reached trainNum, or
   * asyncTrain) is over; at once when there is none. It does not throw: see getState().
   */
  async trainingSettled(indexId: string): Promise<void> {
    await this.indexes.get(indexId)?.training?.catch(() => {});
  }

  /** Starts training and returns at once; poll getState() for TRAINED. */
  async asyncTrain(indexId: string, opts: CallControl = {}): Promise<void> {
    const control = callControl(opts);
    const meta = await this.indexMeta(indexId, control);
    if (meta.sharedTraining) this.training.sharedTrain(indexId, meta).catch(() => {}); // shows as NOT_TRAINED; train again
    else await this.conns.all('bulk', 'asyncTrain', { indexId }, control);
  }

  /** Adds every server's buffered vectors to its (trained) index. */
  async addBufferToIndex(indexId: string, opts: CallControl = {}): Promise<void> {
    await this.conns.all('bulk', 'addBufferToIndex', { indexId }, callControl(opts));
  }

  /** Cluster state with the original's aggregation rules. */
  async getState(indexId: string, opts: CallControl = {}): Promise<IndexState> {
    const infos = await this.conns.infos(indexId, callControl(opts));
    const down = infos.flatMap((info, i) => (info ? [] : [this.servers[i]!.name]));
    if (down.length > 0) throw new ServerUnavailableError(down.join(', '), `cannot tell the state of '${indexId}': ${down.join(', ')} did not answer`);
    const live = infos as ShardInfoReply[];
    const meta = this.knownMeta(indexId, live[0]!);
    // A training under way (here, or left by a client that is gone) is TRAINING, never NOT_TRAINED.
    if (this.training.finish(indexId, meta, live)) return IndexState.TRAINING;
    return clusterState(live, aggregateStates);
  }

  /** Searchable vectors across all servers; 0 for an unknown index. */
  async getNtotal(indexId: string, opts: CallControl = {}): Promise<number> {
    const control = callControl(opts);
    this.conns.checkOpen();
    const counts = await readEverywhere(this.servers, this.revocations, 'query', 'getNtotal', indexId, control);
    return counts.reduce((a, b) => a + b, 0);
  }

  /** Distinct metadata[customMetaIdIdx] values across all servers. */
  async getIds(indexId: string, opts: CallControl = {}): Promise<Set<unknown>> {
    const control = callControl(opts);
    this.conns.checkOpen();
    const lists = await readEverywhere(this.servers, this.revocations, 'bulk', 'getIds', indexId, control);
    return new Set(lists.flat());
  }

  /** Each server's IVF centroids (nlist x dim, row-major). */
  async getCentroids(indexId: string, opts: CallControl = {}): Promise<Array<{ nlist: number; dim: number; data: Float32Array }>> {
    const control = callControl(opts);
    return Promise.all(
      this.servers.map(async (s) => {
        const r = await s.call('query', 'getCentroids', { indexId }, [], control);
        return { ...r.result, data: r.attachments[0].slice() };
      }),
    );
  }

  /** Sets nprobe (efSearch for hnswsq) on every server: an integer from 1 to the index's list count. */
  async setNprobe(indexId: string, nprobe: number, opts: CallControl = {}): Promise<void> {
    await this.setSearchParameter(indexId, 'nprobe', nprobe, opts);
  }

  /**
   * Sets a FAISS search parameter cluster-wide. Which names an index type has and their
   * ranges are in docs/protocol.md ("Search parameters"): nprobe and max_codes (IVF),
   * efSearch and efConstruction (HNSW), ht (PQ), k_factor (IVFPQR), k_factor_rf (refine).
   * Anything else, or a value out of range, is a ValidationError here and on the servers;
   * the index keeps its previous value and stays searchable.
   */
  async setSearchParameter(indexId: string, name: string, value: number, opts: CallControl = {}): Promise<void> {
    const control = callControl(opts);
    const meta = await this.indexMeta(indexId, control);
    if (meta.type) checkSearchParameter(meta.type, name, value);
    await this.conns.all('query', 'setSearchParameter', { indexId, name, value }, control);
  }

  /** OpenMP threads per server for FAISS calls. */
  async setOmpNumThreads(threads: number, opts: CallControl = {}): Promise<void> {
    await this.conns.all('query', 'setOmpNumThreads', { threads }, callControl(opts));
  }

  /** Writes a snapshot of the index on every server. */
  async saveIndex(indexId: string, opts: CallControl = {}): Promise<void> {
    await this.conns.all('bulk', 'saveIndex', { indexId }, callControl(opts));
  }

  /**
   * Loads the index on every server from its storage folder, as the original's
   * load_index(id, cfg=None, force_reload=True): an index already in memory is reloaded
   * (forceReload, the default) or, with forceReload false, kept unless a cfg different from
   * its own is given; a given cfg overrides the stored cfg.json and is saved as it.
   */
  async loadIndex(indexId: string, cfg?: Partial<IndexCfg> | null, forceReload = true, opts: CallControl = {}): Promise<void> {
    const full = cfg ? defaultIndexCfg(cfg) : null;
    await this.conns.all('bulk', 'loadIndex', { indexId, cfg: full && { ...full }, forceReload }, callControl(opts));
    this.indexes.delete(indexId);
  }

  /** Drops the index from memory and deletes its storage folder on every server. */
  async dropIndex(indexId: string, opts: CallControl = {}): Promise<void> {
    await this.conns.all('bulk', 'dropIndex', { indexId }, callControl(opts));
    this.indexes.delete(indexId);
    // The data is gone on every server: nothing left to revoke.
    this.revocations.forget(indexId);
  }

  /** Per-server status: indexes, states, counts, memory. */
  async status(opts: CallControl = {}): Promise<Array<{ address: ServerAddress } & StatusReply>> {
    const control = callControl(opts);
    const all = await Promise.all(
      this.servers.map(async (s) => ({ address: s.address, ...((await s.call('query', 'status', {}, [], control)).result) })),
    );
    // Finish any shared training left unfinished, as every touch of an index does.
    const perIndex = all.map((s) => s.indexes);
    for (const indexId of new Set(perIndex.flatMap((p) => Object.keys(p)))) {
      const infos = perIndex.map((p) => p[indexId] ?? null);
      const first = infos.find((i): i is ShardInfoReply => i !== null)!;
      if (first.sharedTraining) this.training.finish(indexId, this.knownMeta(indexId, first), infos);
    }
    return all;
  }

  /**
   * k nearest neighbours of each query across all servers. Each server returns its own
   * top-k; the client merges them with a heap using the index's own metric.
   */
  async search(indexId: string, queries: VectorsInput, k: number, opts: SearchOptions = {}): Promise<SearchResults> {
    const control = callControl(opts);
    return this.searches.search(indexId, await this.indexMeta(indexId, control), queries, k, opts, control);
  }

  /**
   * Like search(), but only hits that pass the filter count, and k of them are returned
   * whenever k matching hits exist: the client over-fetches and, when too few survive,
   * searches again with a larger k until it has enough or the index is exhausted.
   */
  async searchWithFilter(indexId: string, queries: VectorsInput, k: number, filter: SearchFilter, opts: SearchOptions = {}): Promise<SearchResults> {
    const control = callControl(opts);
    return this.searches.searchWithFilter(indexId, await this.indexMeta(indexId, control), queries, k, filter, opts, control);
  }

  /**
   * Closes every connection, after one bounded attempt (about 5 s) to deliver pending
   * revocations; any left are reported with a process warning (code DFAISS_UNREVOKED).
   */
  async close(): Promise<void> {
    if (!this.conns.markClosed()) return;
    await this.training.settle(this.indexes);
    const left = await this.revocations.close(CLOSE_FLUSH_MS);
    if (left.length > 0) {
      process.emitWarning(
        `dfaiss: ${left.length} batch revocation(s) could not be delivered to ${[...new Set(left.map((r) => r.server))].join(', ')} yet: ` +
          'the servers those batches moved to hold them too, and the next client that reads the index delivers them',
        { code: 'DFAISS_UNREVOKED', detail: JSON.stringify(left) },
      );
    }
    await this.conns.close();
  }

  // ---- internals ----

  /** Dimension and metric of an index: known from createIndex, else asked from a server. */
  private async indexMeta(indexId: string, control: CallControl = {}): Promise<IndexMeta> {
    this.conns.checkOpen();
    const known = this.indexes.get(indexId);
    if (known) return known;
    // First touch of this index by this client: every shard's info, so a shared training
    // another client left unfinished is finished here.
    const infos = await this.conns.infos(indexId, control);
    const first = infos.find((i): i is ShardInfoReply => i !== null);
    if (!first) throw await this.conns.firstAnswer('getInfo', { indexId }, control).then(() => new ConnectionError(`no server answered about index '${indexId}'`), (err: unknown) => err); // all down: fails naming them
    const meta = this.knownMeta(indexId, first);
    infos.forEach((info, i) => {
      if (info) meta.buffered[i] = info.buffered;
      if (info && info.state !== IndexState.NOT_TRAINED && info.state !== IndexState.TRAINING) meta.clusterTrained = true;
    });
    this.training.finish(indexId, meta, infos);
    return meta;
  }

  /** The index's meta, made from a shard's info when this client has none yet. */
  private knownMeta(indexId: string, info: ShardInfoReply): IndexMeta {
    let meta = this.indexes.get(indexId);
    if (!meta) {
      meta = metaFromInfo(this.servers.length, info);
      this.indexes.set(indexId, meta);
    }
    return meta;
  }
}
