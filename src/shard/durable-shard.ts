/**
 * A shard with its folder: write-ahead log + atomic snapshots. Acknowledged means durable:
 * add() resolves only after the batch is in the WAL (fsynced in the default mode), whatever
 * the shard's state. Restore = newest complete snapshot + replay of the WAL after it
 * (restore.ts). This class is the writer side: every change is logged, then applied in the
 * tick the log write completes; idempotency keys are in batch-keys.ts, the revocations held
 * for other servers in held-revocations.ts.
 *
 *   {dir}/cfg.json                  the index configuration
 *   {dir}/centroids.bin             shared training's centroids (when used)
 *   {dir}/snapshot-{generation}/    complete snapshots (the newest two are kept)
 *   {dir}/wal/wal-{firstSeq}.log    log segments (kept back to the older snapshot)
 */
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createStandInIndex, type IndexCfg } from '../config/index.js';
import { IndexStateError, StorageError } from '../errors.js';
import { BatchKeys, type RevokeResult } from './batch-keys.js';
import { HeldRevocations } from './held-revocations.js';
import { restoreShard } from './restore.js';
import { Shard, type SharedTrained, type SharedTrainingOptions, type ShardOptions } from './shard.js';
import {
  exists,
  pruneSnapshots,
  readCfg,
  readSharedTrained,
  snapshotTmpDir,
  writeCfg,
  writeSnapshot,
  writeSharedTrained,
  type SnapshotCut,
} from './snapshot.js';
import { WriteAheadLog, type Durability, type WalObserver } from './wal.js';
import type { RecordId } from './records.js';
import type { PendingVectors } from './pending-buffer.js';
import { scheduleCompaction } from './shard-records.js';

export type { RevokeResult } from './batch-keys.js';

/** Snapshots kept on disk; the WAL is kept back to the oldest, so a bad newest one can fall back. */
const KEEP_SNAPSHOTS = 2;
/** Keys per kind a snapshot carries (the newest ones). */
const SNAPSHOT_KEYS = 10_000;

export interface RestoreReport {
  /** Snapshot generation restored (0 = none: rebuilt from the WAL alone). */
  generation: number;
  walRecords: number;
  /** Everything skipped, with the reason (corrupt snapshots, torn WAL tails). */
  skipped: string[];
}

export interface AddBatchOptions {
  trainAsync?: boolean;
  /** Idempotency key: a batch whose key was stored already is not stored again. */
  key?: string;
  /** Called once the vectors' memory is no longer needed (see Shard.add). */
  release?: () => void;
  /** [rank, key] of this batch's attempts on servers that failed while holding it: held here until delivered. */
  movedFrom?: Array<[number, string]>;
  /** The vectors as they arrived, when that was float16 and the shard gets them widened (cosine): logged as they arrived. */
  arrived?: Uint16Array;
  /** One record id per vector (records with ids); logged with the batch. */
  ids?: RecordId[];
  /** With ids: replace stored records with the same ids (else ids already stored are refused). */
  upsert?: boolean;
}

export interface DeleteResult {
  /** Ids this shard held, now deleted. */
  deleted: RecordId[];
  /** Ids this shard does not hold. */
  unknown: RecordId[];
}

export interface DurableShardOptions extends ShardOptions {
  /** Overrides cfg.durability. */
  durability?: Durability;
  /** Called when an autosave fails (there is no caller to tell). */
  onAutosaveError?: (err: Error) => void;
  /** Observers (metrics): a snapshot was written, a training finished, the WAL wrote (see WalObserver). */
  onSnapshotWritten?: (seconds: number) => void;
  onTrainingDone?: (seconds: number, kind: 'shard' | 'shared') => void;
  onWalWrite?: WalObserver;
}

export class DurableShard {
  readonly dir: string;
  readonly shard: Shard;
  private readonly wal: WriteAheadLog;
  /** Highest WAL sequence applied to memory. */
  private appliedSeq: number;
  private generation: number;
  /** appliedSeq covered by the newest snapshot. */
  private snapshotSeq: number;
  private saving: Promise<void> | null = null;
  private queuedSnapshot: Promise<void> | null = null;
  /** Idempotency keys of batches stored, being stored and revoked. */
  private readonly keys = new BatchKeys();
  /** Revocations this shard holds for other servers, until a client confirms their delivery. */
  private readonly held: HeldRevocations;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Adds accepted (past the closed check) and not yet settled: close() lets them finish. */
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Record ids of batches being logged (an add with one of them is refused as a duplicate). */
  private readonly idsInFlight = new Set<RecordId>();
  /** Batches with (true) and without (false) ids being logged, before the shard's mode is set. */
  private readonly modesInFlight = new Map<boolean, number>();
  private readonly observers: Pick<DurableShardOptions, 'onSnapshotWritten' | 'onTrainingDone'>;

  private constructor(dir: string, shard: Shard, wal: WriteAheadLog, seq: number, generation: number, opts: DurableShardOptions, held = new HeldRevocations()) {
    this.dir = dir;
    this.held = held;
    this.observers = { onSnapshotWritten: opts.onSnapshotWritten, onTrainingDone: opts.onTrainingDone };
    this.shard = shard;
    this.wal = wal;
    this.appliedSeq = seq;
    this.snapshotSeq = seq;
    this.generation = generation;
    const every = shard.cfg.saveIntervalSec;
    if (every > 0) {
      this.timer = setInterval(() => {
        if (this.changed) this.snapshot().catch((err: Error) => opts.onAutosaveError?.(err));
      }, every * 1000);
      this.timer.unref();
    }
  }

  /**
   * A new, empty shard in `dir`. Data already in the folder (from an index created before and
   * not loaded) is moved aside to `{dir}.replaced-{time}`, never deleted.
   */
  static async create(dir: string, cfg: IndexCfg, opts: DurableShardOptions = {}): Promise<DurableShard> {
    try {
      if (await exists(dir)) await rename(dir, `${dir}.replaced-${Date.now()}`);
      await makeShardDir(dir, cfg);
      const wal = await WriteAheadLog.open(join(dir, 'wal'), opts.durability ?? cfg.durability, 0, opts.onWalWrite);
      const link = DurableShard.hookLink({ ...opts, sharedTraining: await usesSharedTraining(cfg) });
      const ds = new DurableShard(dir, new Shard(cfg, link.options), wal, 0, 0, opts);
      link.attach(ds);
      await ds.shard.useIndexIfTrainedAtConstruction(); // Flat, HNSW-Flat, ...: TRAINED at creation
      return ds;
    } catch (err) {
      if (err instanceof StorageError) throw err;
      throw new StorageError(`cannot create index folder ${dir}: ${(err as Error).message}; check the storage root exists and is writable`, { cause: err });
    }
  }

  /** True when `dir` holds a shard (a cfg.json). */
  static async existsIn(dir: string): Promise<boolean> {
    return exists(join(dir, 'cfg.json'));
  }

  /** Restores from the newest complete snapshot plus the WAL; `cfg` overrides the stored one. */
  static async open(dir: string, cfg: IndexCfg | null, opts: DurableShardOptions = {}): Promise<{ shard: DurableShard; report: RestoreReport }> {
    const useCfg = cfg ?? (await readCfg(dir));
    if (!useCfg) throw new StorageError(`${dir} has no cfg.json: not a dfaiss index folder (pass a cfg to load it anyway)`);
    if (cfg) await writeCfg(dir, cfg); // the given cfg is the index's from now on (a later load without one keeps it)
    const link = DurableShard.hookLink({ ...opts, sharedTraining: await usesSharedTraining(useCfg) });
    const r = await restoreShard(dir, useCfg, link.options);
    const { shard } = r;
    // Later appends go to a fresh segment: a torn tail in the old one stays behind the
    // replay point instead of between good records.
    const wal = await WriteAheadLog.open(join(dir, 'wal'), opts.durability ?? useCfg.durability, r.lastSeq, opts.onWalWrite);
    wal.requestRotate();
    // New snapshots number past every folder present, including skipped (damaged) ones.
    const ds = new DurableShard(dir, shard, wal, r.lastSeq, r.newestGeneration, opts, r.held);
    link.attach(ds);
    ds.snapshotSeq = r.snapshotSeq;
    for (const [k, id, n] of r.keys) ds.keys.remember(k, id, n);
    for (const k of r.revokedKeys) ds.keys.rememberRevoked(k);
    if (shard.sharedTraining && !shard.faissIndex) {
      // Installed before the restart but not yet snapshotted: the same state again.
      const trained = await readSharedTrained(dir, useCfg.dim);
      if (trained) await shard.installTrained(trained);
    }
    await shard.useIndexIfTrainedAtConstruction(); // saved before it had vectors, or by an older version
    shard.resume({ trainOnRows: r.trainOnRows });
    return { shard: ds, report: { generation: r.generation, walRecords: r.walRecords, skipped: r.skipped } };
  }

  /**
   * Shard hooks that reach this DurableShard once it exists: a training start is logged
   * (a restart re-trains on the same rows), and a finished training is snapshotted once
   * the buffer has gone into FAISS (a restart then loads the trained index instead of
   * training again).
   */
  private static hookLink(opts: DurableShardOptions): { options: DurableShardOptions; attach: (ds: DurableShard) => void } {
    let target: DurableShard | null = null;
    let trainingSince = 0;
    const options: DurableShardOptions = {
      ...opts,
      onTrainingStart: (rows) => {
        trainingSince = performance.now();
        target?.wal.appendTrainMarker(rows).catch((err: Error) => opts.onAutosaveError?.(err));
      },
      onTrained: () => {
        if (trainingSince > 0) opts.onTrainingDone?.((performance.now() - trainingSince) / 1000, 'shard');
        trainingSince = 0;
        // After the buffer is in FAISS: a snapshot cut now would pin the whole buffer (it
        // writes buffer.bin) while FAISS fills, holding the data twice. Until then a restart
        // gets the same training back from the WAL's train marker or centroids.bin.
        const t = target;
        if (!t || t.closed) return;
        t.shard
          .idle()
          .then(() => (t.closed ? undefined : t.snapshot()))
          .catch((err: Error) => opts.onAutosaveError?.(err));
      },
    };
    return { options, attach: (ds) => (target = ds) };
  }

  get cfg(): IndexCfg {
    return this.shard.cfg;
  }

  /** True when something was added since the newest snapshot. */
  get changed(): boolean {
    return this.appliedSeq !== this.snapshotSeq;
  }

  /**
   * Logs the batch durably, then hands it to the shard; resolves with its first internal id.
   * A batch whose idempotency key was stored already is not stored again (a client retry).
   * `release` is called once the vectors' memory is no longer needed (see Shard.add).
   */
  add(vectors: PendingVectors, blob: Uint8Array, offsets: Uint32Array, opts: AddBatchOptions = {}): Promise<number> {
    const release = opts.release ?? (() => {});
    if (this.closed) {
      release();
      return Promise.reject(closedError());
    }
    return this.track(this.addOnce(vectors, blob, offsets, opts, release));
  }

  /** Keeps `p` in inFlight until it settles. */
  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    const done = (): void => void this.inFlight.delete(p);
    p.then(done, done);
    return p;
  }

  private addOnce(vectors: PendingVectors, blob: Uint8Array, offsets: Uint32Array, opts: AddBatchOptions, release: () => void): Promise<number> {
    const key = opts.key ?? '';
    if (!key) return this.addLogged(vectors, blob, offsets, opts, '', release);
    // A revoked key answers -1: the client has stored this batch elsewhere.
    return this.keys.add(key, () => this.addLogged(vectors, blob, offsets, opts, key, release), release);
  }

  /** How many revocations this shard holds (reported on every search: no copy of the list). */
  get heldCount(): number {
    return this.held.size;
  }

  /** Revocations held for other servers ([rank, key]), until a client confirms their delivery. */
  heldRevocations(): Array<[number, string]> {
    return this.held.list();
  }

  /** A client delivered these held revocations to their servers: forget them (durably). */
  async delivered(pairs: ReadonlyArray<[number, string]>): Promise<number> {
    if (this.closed) throw closedError();
    const known = this.held.known(pairs);
    if (known.length === 0) return 0;
    return this.track(
      this.wal.appendDelivered(known, (seq) => {
        this.appliedSeq = seq;
        this.held.forget(known);
        return known.length;
      }),
    );
  }

  /** Recently stored idempotency keys with their first id and size (for snapshots). */
  recentKeys(): Array<[string, number, number]> {
    return this.keys.recent();
  }

  /**
   * The client gave up on batch `key` here and stored it on another server. If it was stored
   * here, its ids are tombstoned; if it is being written, that finishes first; if it never
   * arrived, it is refused should it still come. Durable (logged) before it resolves.
   */
  revoke(key: string): Promise<RevokeResult> {
    if (this.closed) return Promise.reject(closedError());
    return this.track(
      this.keys.revoke(key, (first, n) =>
        this.wal.appendRevoke(key, first, n, (seq) => {
          this.appliedSeq = seq;
          if (first >= 0) this.shard.tombstone(first, n);
          this.keys.rememberRevoked(key);
          return { outcome: first >= 0 ? 'tombstoned' : 'blocked', count: n } satisfies RevokeResult;
        }),
      ),
    );
  }

  private addLogged(vectors: PendingVectors, blob: Uint8Array, offsets: Uint32Array, opts: AddBatchOptions, key: string, release: () => void): Promise<number> {
    // apply() returns the shard's promise unawaited; its synchronous part (ids, buffering)
    // has run in log order by the time the WAL resolves.
    let handed = false;
    const { trainAsync, movedFrom, ids } = opts;
    const undo = this.reserveRecords(ids, opts.upsert ?? false);
    if (undo instanceof Error) {
      release();
      return Promise.reject(undo);
    }
    return this.wal
      .append({ vectors: opts.arrived ?? vectors, dim: this.cfg.dim, blob, offsets, key, movedFrom, ...(ids ? { ids } : {}) }, (seq) => {
        this.appliedSeq = seq;
        this.held.hold(movedFrom);
        this.keys.remember(key, this.shard.metadata.size, vectors.length / this.cfg.dim);
        handed = true;
        return { done: this.shard.add(vectors, blob, offsets, { trainAsync, release, ...(ids ? { ids } : {}) }) };
      })
      .then(
        (r) => r.done,
        (err: unknown) => {
          if (!handed) release();
          throw err;
        },
      )
      .finally(undo);
  }

  /**
   * Checks a batch against the records stored and being logged (no mixing of batches with
   * and without ids; an add, unlike an upsert, refuses ids that exist) and reserves its ids
   * until it is logged. Returns the release, or the ValidationError.
   */
  private reserveRecords(ids: RecordId[] | undefined, upsert: boolean): (() => void) | Error {
    const withIds = ids !== undefined;
    // Before the first batch is applied, batches still being logged decide the shard's kind.
    const logging = (this.modesInFlight.get(true) ?? 0) > 0 ? 'ids' : (this.modesInFlight.get(false) ?? 0) > 0 ? 'anon' : null;
    try {
      this.shard.records.check(ids, upsert, this.idsInFlight, logging);
    } catch (err) {
      return err as Error;
    }
    this.modesInFlight.set(withIds, (this.modesInFlight.get(withIds) ?? 0) + 1);
    const mine = upsert ? [] : (ids ?? []);
    for (const id of mine) this.idsInFlight.add(id);
    return () => {
      this.modesInFlight.set(withIds, this.modesInFlight.get(withIds)! - 1);
      for (const id of mine) this.idsInFlight.delete(id);
    };
  }

  /**
   * Deletes records by id, durably: logged before it resolves (and before the ids are
   * hidden, which happens in the same tick as the log write completes). Ids this shard
   * does not hold are reported, not logged.
   */
  delete(ids: RecordId[]): Promise<DeleteResult> {
    if (this.closed) return Promise.reject(closedError());
    const known = ids.filter((id) => this.shard.records.lookup(id) !== undefined);
    if (known.length === 0) return Promise.resolve({ deleted: [], unknown: [...ids] });
    return this.track(
      this.wal.appendDelete(known, (seq) => {
        this.appliedSeq = seq;
        const r = this.shard.records.delete(known, this.shard.indexedUpTo);
        scheduleCompaction(this.shard);
        const gone = new Set<RecordId>(r.deleted);
        return { deleted: r.deleted, unknown: ids.filter((id) => !gone.has(id)) } satisfies DeleteResult;
      }),
    );
  }

  /** Shared training on this shard (see Shard.trainShared); the trained state is on disk before it is returned. */
  async trainShared(sample: Float32Array, opts: SharedTrainingOptions = {}): Promise<SharedTrained> {
    const t0 = performance.now();
    const state = await this.shard.trainShared(sample, opts);
    await this.persistTrained(state);
    this.observers.onTrainingDone?.((performance.now() - t0) / 1000, 'shared');
    return state;
  }

  /** Installs another shard's shared-training state; on disk before this resolves. */
  async installTrained(state: SharedTrained): Promise<boolean> {
    const installed = await this.shard.installTrained(state);
    if (installed) await this.persistTrained(state);
    return installed;
  }

  private trainedWrite: Promise<void> | null = null;

  private persistTrained(state: SharedTrained): Promise<void> {
    // A training that ends after a drop must not write into a folder created for a new index.
    if (this.closed) return Promise.reject(new IndexStateError('index was dropped or is being reloaded while it trained; train it again'));
    // Written once; concurrent callers share the write.
    const write = (this.trainedWrite ??= writeSharedTrained(this.dir, state).catch((err: Error) => {
      this.trainedWrite = null;
      throw new StorageError(`cannot write ${join(this.dir, 'trained.bin')}: ${err.message}`, { cause: err });
    }));
    return write;
  }

  /**
   * Writes a new snapshot beside the old one, then trims what no snapshot needs any more.
   * Searches keep running meanwhile (FAISS is written under a shared lock).
   */
  snapshot(): Promise<void> {
    if (this.saving) {
      // One is being written, but it may have cut before data the caller saw acknowledged:
      // queue (at most) one more, which every caller arriving meanwhile shares.
      this.queuedSnapshot ??= this.saving
        .catch(() => {})
        .then(() => {
          this.queuedSnapshot = null;
          return this.snapshot();
        });
      return this.queuedSnapshot;
    }
    this.saving = this.writeNewSnapshot().finally(() => {
      this.saving = null;
    });
    return this.saving;
  }

  /** Final snapshot when something changed (graceful shutdown), then closes the log. */
  async close(opts: { snapshot?: boolean } = {}): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.closed) return;
    this.closed = true;
    // An add that reached the log is applied and acknowledged, never left half-way.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    try {
      if (opts.snapshot && this.changed) await this.snapshot();
      else await (this.queuedSnapshot ?? this.saving)?.catch(() => {}); // an autosave's failure was reported already
    } finally {
      await this.shard.close();
      await this.wal.close();
    }
  }

  /** Closes and deletes the folder. */
  async destroy(): Promise<void> {
    await this.close();
    await rm(this.dir, { recursive: true, force: true });
  }

  private async writeNewSnapshot(): Promise<void> {
    const t0 = performance.now();
    await this.writeSnapshotNow();
    this.observers.onSnapshotWritten?.((performance.now() - t0) / 1000);
  }

  private async writeSnapshotNow(): Promise<void> {
    const generation = this.generation + 1;
    const tmp = snapshotTmpDir(this.dir, generation);
    await mkdir(tmp, { recursive: true });
    const indexTmpPath = join(tmp, 'index.faiss');
    // The cut: one synchronous step while no background add chunk is running.
    const cut: SnapshotCut = await this.shard.quiesce(() => {
      const index = this.shard.faissIndex;
      const indexWrite = index ? index.writeFile(indexTmpPath) : null;
      indexWrite?.catch(() => {}); // awaited (and reported) in writeSnapshot
      return {
        unpin: this.shard.pinPending(),
        index,
        indexWrite,
        indexTmpPath: index ? indexTmpPath : null,
        metaCount: this.shard.metadata.size,
        pending: this.shard.pendingVectors(),
        walSeq: this.appliedSeq,
        recentKeys: this.recentKeys().slice(-SNAPSHOT_KEYS),
        tombstones: this.shard.tombstones(),
        revokedKeys: this.keys.revokedKeys().slice(-SNAPSHOT_KEYS),
        outgoingRevocations: this.heldRevocations(),
        records: this.shard.records.cut(this.shard.metadata.size),
        indexedUpTo: this.shard.indexedUpTo,
      };
    });
    this.wal.requestRotate();
    try {
      await writeSnapshot(this.dir, this.shard, generation, cut);
    } finally {
      cut.unpin();
    }
    this.generation = generation;
    this.snapshotSeq = cut.walSeq;
    const kept = await pruneSnapshots(this.dir, KEEP_SNAPSHOTS);
    const oldest = kept[kept.length - 1];
    if (oldest) {
      const manifestSeq = oldest.generation === generation ? cut.walSeq : await this.walSeqOf(oldest.dir);
      await this.wal.trim(manifestSeq);
    }
  }

  private async walSeqOf(snapDir: string): Promise<number> {
    try {
      return (JSON.parse(await readFile(join(snapDir, 'manifest.json'), 'utf8')) as { walSeq: number }).walSeq;
    } catch {
      return 0; // unreadable: keep the whole log
    }
  }
}

/**
 * Creates the shard folder with its cfg.json. Another rank dropping the same index removes
 * the (shared) index folder once it looks empty, which can happen between our mkdir and
 * our first file: then the folder is made again (bounded).
 */
async function makeShardDir(dir: string, cfg: IndexCfg): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await mkdir(dir, { recursive: true });
      await writeCfg(dir, cfg);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 5) throw err;
    }
  }
}

/**
 * Shared training applies to index types whose trained state is plain arrays (coarse
 * centroids, PQ codebooks, SQ ranges, linear transforms: FaissIndex.trainedLayout), checked
 * against the local index, where a serialized FAISS index would be an unsafe input. Flat
 * needs no training; other types (an HNSW coarse quantizer, IVFPQR, ...) train per shard.
 */
async function usesSharedTraining(cfg: IndexCfg): Promise<boolean> {
  if (cfg.trainMode !== 'shared') return false;
  const standIn = await createStandInIndex(cfg);
  return !standIn.isTrained && standIn.trainedLayout !== null;
}

/** What a call on a closed shard (dropped, or being reloaded) fails with. */
function closedError(): IndexStateError {
  return new IndexStateError('index was dropped or is being reloaded; create or load it again');
}
