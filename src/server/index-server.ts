/**
 * IndexServer: one isolated process holding shards of several named logical indexes.
 * It knows nothing of other servers; clients do all coordination. Requests arrive over
 * the RPC layer and are dispatched only through the method table in methods.ts.
 */
import { readdir, rm, rmdir, stat } from 'node:fs/promises';
import { availableParallelism, hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { checkIndexCfgBuildable, type IndexCfg } from '../config/index.js';
import { IndexStateError, UnknownIndexError, ValidationError } from '../errors.js';
import { appendFileLocked } from '../discovery/nfs-lock.js';
import { faissBuild, releasableBuffers, setOmpNumThreads } from '../native/index.js';
import { RpcServer, type RpcServerOptions } from '../protocol/index.js';
import { DurableShard, type AddBatchOptions } from '../shard/durable-shard.js';
import { checkBatch, type Shard, type ShardInfo } from '../shard/shard.js';
import { BufferBound } from './buffer-bound.js';
import { IndexLocks } from './index-locks.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { CheckedMatrix } from '../vectors.js';
import { LocalShard } from './local-shard.js';
import { listenError, MetricsHttpServer } from './metrics-http.js';
import type { ServerMetrics } from './metrics.js';
import { checkIndexId, indexIdOfFolder, shardDir } from './paths.js';
import { rpcSecurityOptions, type ServerSecurityOptions } from './security-options.js';

export interface IndexServerStartOptions {
  /** TCP port; 0 picks a free one (reported by start()). @default 0 */
  port?: number;
  /** Interface to bind. Use '0.0.0.0' to serve other machines. @default '127.0.0.1' */
  host?: string;
  /** Load every index found under the storage folder for this rank before serving. @default false */
  loadIndex?: boolean;
  /** Append "host,port" to this discovery file once listening. */
  discoveryConfig?: string;
  /**
   * Serve Prometheus metrics, /healthz and /readyz over HTTP on this port (0 = a free one);
   * off when undefined. It starts before the indexes load, so /readyz says 503 meanwhile.
   */
  metricsPort?: number;
  /** Interface of the metrics port. No authentication there (counts only). @default host */
  metricsHost?: string;
}

/** Requests answered since the server started, kept always (cheap) for status and the dashboard. */
export interface RequestCounts {
  requests: number;
  errors: number;
  searches: number;
  /** Seconds spent in search requests: the dashboard's mean latency is its rate over the searches' rate. */
  searchSeconds: number;
}

export interface IndexServerOptions extends ServerSecurityOptions {
  /**
   * OpenMP/BLAS threads for this server's FAISS calls. Several servers often share a
   * machine, so the default is 1 (measured here: default threads in 4 servers on 2 cores
   * ran batched search 20x slower). Set cores / servers-per-machine. @default 1
   */
  threads?: number;
  /**
   * Threads for a shared training this server runs for the cluster (one k-means while the
   * other shards wait for its result, so it may use every core). @default os.availableParallelism()
   */
  trainThreads?: number;
  /**
   * This server is alone in its process, so `threads` (and setOmpNumThreads) also set the
   * process-wide FAISS and OpenBLAS thread counts. Servers sharing a process (the ranks of
   * `dfaiss server --ranks-per-process`) pass false: each then sets the threads of its own
   * indexes only, and whoever started them sets the process-wide count once. @default true
   */
  ownsProcess?: boolean;
  /**
   * Per index, bytes of vectors a shard may hold outside FAISS (buffered for a training, or
   * waiting for their background add). An add that would go past it waits until the shard
   * has room (training and adding free it), at most `bufferWaitMs`; then it is refused with
   * ServerBusyError, which clients resend after a pause (so a training of any length only
   * slows the load down), or at once with IndexStateError when nothing can free it (a
   * per-shard training whose trainNum alone exceeds the bound). A batch into an empty buffer
   * is always taken. 0 = no bound.
   * @default DEFAULT_MAX_BUFFERED_BYTES (512 MiB), raised per index to what a per-shard
   * training must buffer before it can start; a bound that is set is kept strictly (and an
   * index whose per-shard training cannot fit it is refused when created).
   */
  maxBufferedBytes?: number;
  /** How long an add waits for room under maxBufferedBytes before the server answers busy. @default 1000 */
  bufferWaitMs?: number;
  /** Structured logger. @default silent */
  logger?: Logger;
  /** Passed to the RPC layer (frame limits, in-flight limits, hello timeout). */
  rpc?: Omit<RpcServerOptions, 'methods' | 'rank' | 'capabilities'>;
  /**
   * TESTS ONLY (set by `dfaiss server` from DFAISS_TEST_DIE_AFTER_WAL=1): the process kills
   * itself with SIGKILL right after an add is durable in the log, before replying, so tests
   * can reproduce "the server stored the batch but the client never heard back".
   */
  testDieAfterLoggedAdd?: boolean;
}

export class IndexServer {
  readonly rank: number;
  readonly saveDir: string;
  readonly log: Logger;
  private readonly shards = new Map<string, DurableShard>();
  private readonly rpc: RpcServer;
  private readonly locks = new IndexLocks();
  private threads: number;
  private readonly ownsProcess: boolean;
  readonly trainThreads: number;
  private readonly dieAfterLoggedAdd: boolean;
  private readonly bufferBound: BufferBound;
  private address: { host: string; port: number } | null = null;
  /** Created on first use: prom-client is loaded only by a server that serves or is asked for metrics. */
  private metricsLoading: Promise<ServerMetrics> | undefined;
  private metrics: ServerMetrics | undefined;
  private metricsHttp: MetricsHttpServer | undefined;
  private metricsAddress: { host: string; port: number } | undefined;
  /** null once serving; else why not (for /readyz). */
  private notReady: string | null = 'starting';
  readonly counts: RequestCounts = { requests: 0, errors: 0, searches: 0, searchSeconds: 0 };
  /** This server's shards behind the shard interface: the operations its RPC server serves. */
  readonly local: LocalShard;

  /** A server in this process that does not listen, reached through its LocalShard (close() stops it). */
  static inProcess(rank: number, saveDir: string, opts: IndexServerOptions = {}): LocalShard {
    const server = new IndexServer(rank, saveDir, opts);
    server.setOmpNumThreads(server.threads);
    return server.local;
  }

  constructor(rank: number, saveDir: string, opts: IndexServerOptions = {}) {
    if (!Number.isSafeInteger(rank) || rank < 0) throw new ValidationError('rank', 'a non-negative integer', rank);
    if (typeof saveDir !== 'string' || saveDir === '') throw new ValidationError('saveDir', 'a folder path', saveDir);
    this.rank = rank;
    this.saveDir = resolve(saveDir);
    this.log = (opts.logger ?? silentLogger).child({ rank });
    this.threads = opts.threads ?? 1;
    this.ownsProcess = opts.ownsProcess ?? true;
    this.trainThreads = opts.trainThreads ?? availableParallelism();
    if (!Number.isSafeInteger(this.trainThreads) || this.trainThreads < 1 || this.trainThreads > 1024) {
      throw new ValidationError('trainThreads', 'an integer from 1 to 1024', this.trainThreads);
    }
    this.dieAfterLoggedAdd = opts.testDieAfterLoggedAdd ?? false;
    this.bufferBound = new BufferBound({ maxBufferedBytes: opts.maxBufferedBytes, waitMs: opts.bufferWaitMs ?? 1000, rank, log: this.log });
    this.local = new LocalShard(this);
    this.rpc = new RpcServer({
      ...opts.rpc,
      pool: { ...releasableBuffers, ...opts.rpc?.pool },
      ...rpcSecurityOptions(opts),
      methods: this.local.operations,
      rank,
      capabilities: ['fp16', 'metadata-blob', 'search-embeddings'],
      faiss: { version: faissBuild.version, simd: faissBuild.simd, blas: faissBuild.blas },
      onError: (err, info) => this.log.warn({ err: err.message, ...info }, 'request problem'),
      onCall: (method, seconds, ok) => this.onCall(method, seconds, ok),
    });
  }

  /** Starts serving; resolves with the bound address. */
  async start(opts: IndexServerStartOptions = {}): Promise<{ host: string; port: number; metricsPort?: number }> {
    this.setOmpNumThreads(this.threads);
    const host = opts.host ?? '127.0.0.1';
    if (opts.metricsPort !== undefined) await this.startMetrics(opts.metricsHost ?? host, opts.metricsPort);
    if (opts.loadIndex) {
      this.notReady = 'loading indexes';
      await this.loadAll();
    }
    let addr: { host: string; port: number };
    try {
      addr = await this.rpc.listen(host, opts.port ?? 0);
    } catch (err) {
      // Nothing serves: close what start() opened (the metrics port, loaded shards' logs).
      await this.metricsHttp?.close();
      await Promise.allSettled([...this.shards.values()].map((s) => s.close()));
      this.shards.clear();
      const cause = (err as Error).cause as NodeJS.ErrnoException | undefined;
      throw cause?.code ? listenError(cause, host, opts.port ?? 0, '--port') : err;
    }
    this.address = addr;
    this.notReady = null;
    if (opts.discoveryConfig) await this.publish(opts.discoveryConfig);
    this.log.info({ host: addr.host, port: addr.port, saveDir: this.saveDir, threads: this.threads, ...(this.metricsAddress ? { metricsPort: this.metricsAddress.port } : {}) }, 'index server listening');
    return this.metricsAddress ? { ...addr, metricsPort: this.metricsAddress.port } : addr;
  }

  /**
   * Appends this server's `host,port` line to a discovery file (start() does it when given
   * discoveryConfig; a process serving several ranks does it once all of them listen).
   */
  async publish(discoveryConfig: string): Promise<void> {
    if (!this.address) throw new IndexStateError('the server is not listening yet: start() it before publishing its address');
    const { host: bound, port } = this.address;
    const host = bound === '0.0.0.0' || bound === '::' ? hostname() : bound;
    // Under a hard-link lock: servers on several machines may append to one file on NFS.
    await appendFileLocked(discoveryConfig, `${host},${port}\n`);
  }

  get port(): number | undefined {
    return this.address?.port;
  }

  /** The metrics port, when serving metrics. */
  get metricsPort(): number | undefined {
    return this.metricsAddress?.port;
  }

  get connectionCount(): number {
    return this.rpc.connectionCount;
  }

  /** Added to the status reply: connections, request counts (the dashboard's QPS and latency), uptime, metrics port. */
  statusExtras(): { connections: number; requests: RequestCounts; uptimeSec: number; metricsPort?: number } {
    const extras = { connections: this.rpc.connectionCount, requests: { ...this.counts }, uptimeSec: process.uptime() };
    return this.metricsAddress ? { ...extras, metricsPort: this.metricsAddress.port } : extras;
  }

  /** The Prometheus text of this server's metrics (also without a metrics port: they are created on first use). */
  async metricsText(): Promise<string> {
    return (await this.metricsOrCreate()).text();
  }

  private metricsOrCreate(): Promise<ServerMetrics> {
    this.metricsLoading ??= import('./metrics.js').then(
      ({ ServerMetrics }) =>
        (this.metrics = new ServerMetrics(
          {
            rank: this.rank,
            connectionCount: () => this.rpc.connectionCount,
            indexes: () => [...this.shards].map(([id, d]): [string, ShardInfo] => [id, d.shard.info]),
          },
          this.rpc.methodNames,
        )),
    );
    return this.metricsLoading;
  }

  private async startMetrics(host: string, port: number): Promise<void> {
    const metrics = await this.metricsOrCreate();
    const http = new MetricsHttpServer({ metrics, notReady: () => this.notReady });
    this.metricsAddress = await http.listen(host, port);
    this.metricsHttp = http;
  }

  private onCall(method: string, seconds: number, ok: boolean): void {
    const c = this.counts;
    c.requests++;
    if (!ok) c.errors++;
    if (method === 'search') {
      c.searches++;
      c.searchSeconds += seconds;
    }
    this.metrics?.onCall(method, seconds, ok);
  }

  /**
   * Graceful shutdown: stops accepting connections, lets running requests finish, then
   * writes a snapshot of every index that changed since its last one and closes its log.
   */
  async stop(): Promise<void> {
    this.notReady = 'shutting down';
    await this.rpc.close({ graceMs: 2000 });
    const results = await Promise.allSettled([...this.shards.values()].map((s) => s.close({ snapshot: true })));
    for (const r of results) if (r.status === 'rejected') this.log.error({ err: (r.reason as Error).message }, 'final snapshot failed (the write-ahead log still has the data)');
    this.shards.clear();
    await this.metricsHttp?.close();
    this.log.info('index server stopped');
  }

  // ---- operations used by the method table ----

  getShard(indexId: string): Shard {
    return this.getDurable(indexId).shard;
  }

  getDurable(indexId: string): DurableShard {
    const shard = this.shards.get(checkIndexId(indexId));
    if (!shard) throw new UnknownIndexError(indexId);
    return shard;
  }

  findShard(indexId: string): Shard | undefined {
    return this.shards.get(checkIndexId(indexId))?.shard;
  }

  indexIds(): string[] {
    return [...this.shards.keys()];
  }

  /**
   * Runs `fn` on the index's current shard while no create, load or drop of that index
   * runs (see IndexLocks): the shard cannot be closed or replaced under it.
   */
  withShard<T>(indexId: string, fn: (durable: DurableShard) => Promise<T>): Promise<T> {
    checkIndexId(indexId);
    return this.locks.shared(indexId, () => fn(this.getDurable(indexId)));
  }

  /** sharedTraining: whether clients train this index once for all shards (trainMode 'shared' on a type that needs training). */
  createIndex(indexId: string, cfg: IndexCfg): Promise<{ created: boolean; sharedTraining: boolean }> {
    checkIndexId(indexId);
    const dir = shardDir(this.saveDir, cfg.indexStorageDir, indexId, this.rank);
    // Several clients may create the same index at once: one creates it, the others find it.
    return this.locks.exclusive(indexId, async () => {
      const existing = this.shards.get(indexId);
      if (existing) {
        if (isDeepStrictEqual(existing.cfg, cfg)) return { created: false, sharedTraining: existing.shard.sharedTraining };
        throw new ValidationError('cfg', `the configuration index '${indexId}' already has (drop it first to change it)`, 'a different configuration');
      }
      // A config that can never build or train is refused now, not as a background error later.
      await checkIndexCfgBuildable(cfg);
      await this.bufferBound.checkCreate(cfg);
      const shard = await DurableShard.create(dir, cfg, this.shardOptions(indexId));
      this.track(indexId, shard);
      this.log.info({ indexId }, 'index created');
      return { created: true, sharedTraining: shard.shard.sharedTraining };
    });
  }

  /**
   * Logs the batch durably, then buffers/indexes it; resolves with its first internal id.
   * A batch that arrives while the index is being reloaded goes to the reloaded shard; one
   * that is refused (unknown or dropped index, wrong shape) leaves nothing behind.
   */
  async addBatch(indexId: string, vectors: CheckedMatrix | Uint16Array, blob: Uint8Array, offsets: Uint32Array, opts: AddBatchOptions): Promise<number> {
    let handed = false;
    try {
      // Outside the index lock: a drop or reload must not wait behind a full buffer.
      const unreserve = await this.bufferBound.room(indexId, () => this.getShard(indexId), vectors.byteLength);
      return await this.withShard(indexId, async (durable) => {
        // Checked again here: a reload may have changed the configuration since the request arrived.
        checkBatch(durable.cfg, vectors, offsets.length - 1);
        handed = true;
        const first = await durable.add(vectors, blob, offsets, opts);
        if (this.dieAfterLoggedAdd && first >= 0) {
          this.log.warn({ indexId, firstId: first }, 'DFAISS_TEST_DIE_AFTER_WAL: batch logged, dying before the reply');
          process.kill(process.pid, 'SIGKILL');
        }
        return first;
      }).finally(unreserve);
    } finally {
      if (!handed) opts.release?.();
    }
  }

  saveIndex(indexId: string): Promise<void> {
    return this.withShard(indexId, async (durable) => {
      await durable.snapshot();
      this.log.info({ indexId, ntotal: durable.shard.info.ntotal }, 'index saved');
    });
  }

  /**
   * Loads an index from its folder. Without forceReload an index already in memory is kept,
   * unless `cfg` differs from its own: the cfg is applied (by a reload) either way.
   */
  loadIndex(indexId: string, cfg: IndexCfg | null, forceReload: boolean): Promise<{ loaded: boolean }> {
    checkIndexId(indexId);
    return this.locks.exclusive(indexId, async () => {
      const current = this.shards.get(indexId);
      if (current && !forceReload && (cfg === null || isDeepStrictEqual(cfg, current.cfg))) return { loaded: false };
      const dir = this.dirOf(indexId, cfg ?? current?.cfg ?? null);
      const saved = await DurableShard.existsIn(dir);
      if (!saved && !cfg) throw new UnknownIndexError(indexId);
      // forceReload: everything acknowledged is in the log, so closing without a snapshot
      // loses nothing (no add is half-way: adds hold the index's lock shared). Searches keep
      // reading the old shard until the new one is in place.
      await current?.close();
      let opened: Awaited<ReturnType<typeof DurableShard.open>>;
      try {
        if (!saved) {
          // Nothing saved yet for this rank: start empty with the given configuration.
          this.track(indexId, await DurableShard.create(dir, cfg!, this.shardOptions(indexId)));
          return { loaded: false };
        }
        opened = await DurableShard.open(dir, cfg, this.shardOptions(indexId));
      } catch (err) {
        this.shards.delete(indexId);
        throw err;
      }
      const { shard, report } = opened;
      this.track(indexId, shard);
      if (report.skipped.length > 0) this.log.warn({ indexId, skipped: report.skipped }, 'restore skipped damaged files');
      this.log.info({ indexId, generation: report.generation, walRecords: report.walRecords, ...shard.shard.info }, 'index loaded');
      return { loaded: true };
    });
  }

  /**
   * Drops the index from memory and deletes its folders on this server: the shard folder,
   * any `.replaced-*` folders of earlier lives of it, and the index folder once no other
   * rank's shard is left in it.
   */
  dropIndex(indexId: string): Promise<void> {
    checkIndexId(indexId);
    return this.locks.exclusive(indexId, async () => {
      const durable = this.getDurable(indexId);
      this.shards.delete(indexId);
      await durable.destroy();
      await removeReplaced(durable.dir);
      this.log.info({ indexId }, 'index dropped');
    });
  }

  setOmpNumThreads(n: number): void {
    if (!Number.isSafeInteger(n) || n < 1 || n > 1024) throw new ValidationError('threads', 'an integer from 1 to 1024', n);
    this.threads = n;
    if (this.ownsProcess) setOmpNumThreads(n);
    for (const durable of this.shards.values()) durable.shard.setThreads(n);
  }

  /** Serves `durable` as `indexId`, with this server's FAISS threads. */
  private track(indexId: string, durable: DurableShard): void {
    durable.shard.setThreads(this.threads);
    this.shards.set(indexId, durable);
  }

  get threadCount(): number {
    return this.threads;
  }

  private shardOptions(indexId: string) {
    return {
      onError: (err: Error) => this.log.error({ indexId, err: err.message }, 'background job failed'),
      onAutosaveError: (err: Error) => this.log.error({ indexId, err: err.message }, 'autosave failed (the write-ahead log still has the data)'),
      // Metrics observers: no-ops until metrics exist (one optional call each).
      onSnapshotWritten: (seconds: number) => this.metrics?.onSnapshot(indexId, seconds),
      onTrainingDone: (seconds: number, kind: 'shard' | 'shared') => this.metrics?.onTrained(indexId, seconds, kind),
      onWalWrite: (bytes: number, fsyncSeconds: number | null) => this.metrics?.onWalWrite(indexId, bytes, fsyncSeconds),
    };
  }

  private dirOf(indexId: string, cfg: IndexCfg | null): string {
    return shardDir(this.saveDir, cfg?.indexStorageDir ?? null, indexId, this.rank);
  }

  /** Loads {saveDir}/{folder name of indexId}/{rank} for every index folder present. */
  private async loadAll(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.saveDir);
    } catch {
      return;
    }
    for (const name of names) {
      const id = indexIdOfFolder(name); // null: not an index folder (e.g. a stray file)
      if (id === null) continue;
      try {
        if (!(await stat(join(this.saveDir, name))).isDirectory()) continue;
      } catch {
        continue;
      }
      if (await DurableShard.existsIn(join(this.saveDir, name, String(this.rank)))) {
        await this.loadIndex(id, null, true);
      }
    }
  }
}

/** Deletes `{dir}.replaced-*` beside a dropped shard folder, then the index folder if it is empty now. */
async function removeReplaced(dir: string): Promise<void> {
  const parent = dirname(dir);
  const prefix = `${basename(dir)}.replaced-`;
  let names: string[] = [];
  try {
    names = await readdir(parent);
  } catch {
    return;
  }
  for (const name of names) if (name.startsWith(prefix)) await rm(join(parent, name), { recursive: true, force: true });
  // Other ranks may share the index folder (one storage root for a local cluster): it goes
  // only once it is empty, and a rank creating its shard meanwhile retries (DurableShard.create).
  await rmdir(parent).catch(() => {});
}
