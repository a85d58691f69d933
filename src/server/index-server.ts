/**
 * IndexServer: one isolated process holding shards of several named logical indexes.
 * It knows nothing of other servers; clients do all coordination. Requests arrive over
 * the RPC layer and are dispatched only through the method table in methods.ts.
 */
import { appendFile, readdir, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { IndexCfg } from '../config/index.js';
import { UnknownIndexError, ValidationError } from '../errors.js';
import { setNumThreads } from '../native/index.js';
import { RpcServer, type RpcServerOptions } from '../protocol/index.js';
import { Shard } from '../shard/shard.js';
import { loadShard, removeShardDir, saveShard, shardExists } from '../shard/storage.js';
import { silentLogger, type Logger } from './logger.js';
import { buildMethods } from './methods.js';
import { checkIndexId, shardDir } from './paths.js';

export interface IndexServerStartOptions {
  /** TCP port; 0 picks a free one (reported by start()). @default 0 */
  port?: number;
  /** Interface to bind. Use '0.0.0.0' to serve other machines. @default '127.0.0.1' */
  host?: string;
  /** Load every index found under the storage folder for this rank before serving. @default false */
  loadIndex?: boolean;
  /** Append "host,port" to this discovery file once listening. */
  discoveryConfig?: string;
}

export interface IndexServerOptions {
  /**
   * OpenMP/BLAS threads for this server's FAISS calls. Several servers often share a
   * machine, so the default is 1 (measured here: default threads in 4 servers on 2 cores
   * ran batched search 20x slower). Set cores / servers-per-machine. @default 1
   */
  threads?: number;
  /** Structured logger. @default silent */
  logger?: Logger;
  /** Passed to the RPC layer (frame limits, in-flight limits, hello timeout). */
  rpc?: Omit<RpcServerOptions, 'methods' | 'rank' | 'capabilities'>;
}

export class IndexServer {
  readonly rank: number;
  readonly storageDir: string;
  readonly log: Logger;
  private readonly shards = new Map<string, Shard>();
  private readonly rpc: RpcServer;
  private threads: number;
  private address: { host: string; port: number } | null = null;

  constructor(rank: number, storageDir: string, opts: IndexServerOptions = {}) {
    if (!Number.isSafeInteger(rank) || rank < 0) throw new ValidationError('rank', 'a non-negative integer', rank);
    if (typeof storageDir !== 'string' || storageDir === '') throw new ValidationError('storageDir', 'a folder path', storageDir);
    this.rank = rank;
    this.storageDir = resolve(storageDir);
    this.log = (opts.logger ?? silentLogger).child({ rank });
    this.threads = opts.threads ?? 1;
    this.rpc = new RpcServer({
      ...opts.rpc,
      methods: buildMethods(this),
      rank,
      capabilities: ['fp16', 'metadata-blob', 'search-embeddings'],
      onError: (err, info) => this.log.warn({ err: err.message, ...info }, 'request problem'),
    });
  }

  /** Starts serving; resolves with the bound address. */
  async start(opts: IndexServerStartOptions = {}): Promise<{ host: string; port: number }> {
    this.setThreads(this.threads);
    if (opts.loadIndex) await this.loadAll();
    const addr = await this.rpc.listen(opts.host ?? '127.0.0.1', opts.port ?? 0);
    this.address = addr;
    if (opts.discoveryConfig) {
      const host = addr.host === '0.0.0.0' || addr.host === '::' ? hostname() : addr.host;
      // One short O_APPEND write: atomic on a local file system. (The SLURM launcher wraps
      // this in an NFS-safe lock.)
      await appendFile(opts.discoveryConfig, `${host},${addr.port}\n`);
    }
    this.log.info({ host: addr.host, port: addr.port, storageDir: this.storageDir, threads: this.threads }, 'index server listening');
    return addr;
  }

  get port(): number | undefined {
    return this.address?.port;
  }

  /** Stops accepting connections and waits for running requests and background work. */
  async stop(): Promise<void> {
    await this.rpc.close({ graceMs: 2000 });
    await Promise.allSettled([...this.shards.values()].map((s) => s.idle()));
    this.log.info('index server stopped');
  }

  // ---- operations used by the method table ----

  getShard(indexId: string): Shard {
    const shard = this.shards.get(checkIndexId(indexId));
    if (!shard) throw new UnknownIndexError(indexId);
    return shard;
  }

  findShard(indexId: string): Shard | undefined {
    return this.shards.get(checkIndexId(indexId));
  }

  indexIds(): string[] {
    return [...this.shards.keys()];
  }

  createIndex(indexId: string, cfg: IndexCfg): { created: boolean } {
    checkIndexId(indexId);
    shardDir(this.storageDir, cfg.indexStorageDir, indexId, this.rank); // validates the folder early
    const existing = this.shards.get(indexId);
    if (existing) {
      if (isDeepStrictEqual(existing.cfg, cfg)) return { created: false };
      throw new ValidationError('cfg', `the configuration index '${indexId}' already has (drop it first to change it)`, 'a different configuration');
    }
    this.shards.set(indexId, this.newShard(indexId, cfg));
    this.log.info({ indexId }, 'index created');
    return { created: true };
  }

  async saveIndex(indexId: string): Promise<void> {
    const shard = this.getShard(indexId);
    await saveShard(shard, this.dirOf(indexId, shard.cfg));
    this.log.info({ indexId, ntotal: shard.info.ntotal }, 'index saved');
  }

  /** Loads an index from its folder; without forceReload an index already in memory is kept. */
  async loadIndex(indexId: string, cfg: IndexCfg | null, forceReload: boolean): Promise<{ loaded: boolean }> {
    checkIndexId(indexId);
    const current = this.shards.get(indexId);
    if (current && !forceReload) return { loaded: false };
    const dir = this.dirOf(indexId, cfg ?? current?.cfg ?? null);
    if (!(await shardExists(dir))) {
      if (cfg) {
        // Nothing saved yet for this rank: start empty with the given configuration.
        if (current) await current.close();
        this.shards.set(indexId, this.newShard(indexId, cfg));
        return { loaded: false };
      }
      throw new UnknownIndexError(indexId);
    }
    if (current) {
      this.shards.delete(indexId);
      await current.close();
    }
    const shard = await loadShard(dir, cfg, { onError: (err) => this.log.error({ indexId, err: err.message }, 'background job failed') });
    this.shards.set(indexId, shard);
    this.log.info({ indexId, ...shard.info }, 'index loaded');
    return { loaded: true };
  }

  async dropIndex(indexId: string): Promise<void> {
    const shard = this.getShard(indexId);
    this.shards.delete(indexId);
    await shard.close();
    await removeShardDir(this.dirOf(indexId, shard.cfg));
    this.log.info({ indexId }, 'index dropped');
  }

  setThreads(n: number): void {
    if (!Number.isSafeInteger(n) || n < 1 || n > 1024) throw new ValidationError('threads', 'an integer from 1 to 1024', n);
    this.threads = n;
    setNumThreads(n);
  }

  get threadCount(): number {
    return this.threads;
  }

  private newShard(indexId: string, cfg: IndexCfg): Shard {
    return new Shard(cfg, { onError: (err) => this.log.error({ indexId, err: err.message }, 'background job failed') });
  }

  private dirOf(indexId: string, cfg: IndexCfg | null): string {
    return shardDir(this.storageDir, cfg?.indexStorageDir ?? null, indexId, this.rank);
  }

  /** Loads {storageDir}/{indexId}/{rank} for every index folder present. */
  private async loadAll(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.storageDir);
    } catch {
      return;
    }
    for (const name of names) {
      try {
        checkIndexId(name);
        if (!(await stat(join(this.storageDir, name))).isDirectory()) continue;
      } catch {
        continue;
      }
      if (await shardExists(join(this.storageDir, name, String(this.rank)))) {
        await this.loadIndex(name, null, true);
      }
    }
  }
}
