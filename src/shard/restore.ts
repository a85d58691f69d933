/**
 * Restore: the newest complete snapshot (falling back to older ones when one is damaged)
 * plus a replay of the WAL after it, into a Shard and the durable layer's bookkeeping
 * (idempotency keys, revoked keys, held revocations, a training to redo).
 */
import { join } from 'node:path';
import type { IndexCfg } from '../config/index.js';
import { StorageError } from '../errors.js';
import { checkHalfMatrix } from '../vectors.js';
import { fp16ToFp32, normalizeL2 } from '../native/index.js';
import { HeldRevocations } from './held-revocations.js';
import { Shard, type ShardOptions } from './shard.js';
import { waitsAsFloat16 } from './pending-buffer.js';
import { listSnapshots, readSnapshot } from './snapshot.js';
import { replayWal } from './wal.js';

export interface Restored {
  shard: Shard;
  /** Snapshot generation restored (0 = none: rebuilt from the WAL alone). */
  generation: number;
  /** The newest snapshot folder's generation, restored or skipped (new snapshots number past it). */
  newestGeneration: number;
  /** WAL sequence the restored snapshot covers. */
  snapshotSeq: number;
  /** Last WAL sequence replayed. */
  lastSeq: number;
  walRecords: number;
  /** Idempotency keys [key, first id, vectors] (0 vectors: from an old snapshot, cannot be tombstoned). */
  keys: Array<[string, number, number]>;
  revokedKeys: string[];
  held: HeldRevocations;
  /** A training had started on this many rows (redo it on the same rows). */
  trainOnRows: number | undefined;
  /** Everything skipped, with the reason (corrupt snapshots, torn WAL tails). */
  skipped: string[];
}

export async function restoreShard(dir: string, cfg: IndexCfg, opts: ShardOptions): Promise<Restored> {
  const skipped: string[] = [];
  let shard: Shard | null = null;
  let generation = 0;
  let fromSeq = 0;
  let recentKeys: Array<[string, number, number?]> = [];
  let revokedKeys: string[] = [];
  const held = new HeldRevocations();
  const snapshots = await listSnapshots(dir);
  for (const snap of snapshots) {
    try {
      // cfg.json beside the snapshots wins over a snapshot's copy: a load with a cfg rewrites it.
      const r = await readSnapshot(snap.dir, cfg, opts);
      shard = r.shard;
      generation = snap.generation;
      fromSeq = r.manifest.walSeq;
      recentKeys = r.manifest.recentKeys ?? [];
      revokedKeys = r.manifest.revokedKeys ?? [];
      held.hold(r.manifest.outgoingRevocations);
      for (const [first, n] of r.manifest.tombstones ?? []) shard.tombstone(first, n);
      break;
    } catch (err) {
      skipped.push(`snapshot ${snap.generation} skipped: ${(err as Error).message}`);
    }
  }
  const into = shard ?? new Shard(cfg, opts);
  // Entries of snapshots older than revocations carry no batch size (0: cannot be tombstoned).
  const keys: Array<[string, number, number]> = recentKeys.map(([k, first, n]) => [k, first, n ?? 0]);
  const revoked: string[] = [...revokedKeys];
  let trainOnRows: number | undefined;
  const report = await replayWal(join(dir, 'wal'), fromSeq, (rec) => {
    if (rec.type === 'train') {
      trainOnRows = rec.rows;
      return;
    }
    if (rec.type === 'delivered') {
      held.forget(rec.movedFrom);
      return;
    }
    if (rec.type === 'delete') {
      into.records.delete(rec.ids ?? [], into.indexedUpTo);
      return;
    }
    if (rec.type === 'revoke') {
      // The logged outcome, not a fresh decision: the replay does what happened live.
      if (rec.firstId! >= 0 && rec.rows > 0) into.tombstone(rec.firstId!, rec.rows);
      revoked.push(rec.key);
      return;
    }
    if (rec.dim !== cfg.dim) throw new StorageError(`WAL record ${rec.seq} has dim ${rec.dim}, the index has ${cfg.dim}`);
    if (rec.key) keys.push([rec.key, into.metadata.size, rec.rows]);
    held.hold(rec.movedFrom);
    // float16 is logged as it arrived, and waits as it did live (see waitsAsFloat16).
    let vectors = rec.vectors;
    if (vectors instanceof Uint16Array && !waitsAsFloat16(cfg.metric)) normalizeL2((vectors = fp16ToFp32(vectors)), cfg.dim);
    else if (vectors instanceof Uint16Array) checkHalfMatrix(vectors, cfg.dim, 'vectors');
    void into.add(vectors, rec.blob, rec.offsets, { replay: true, ...(rec.ids ? { ids: rec.ids } : {}) });
  });
  skipped.push(...report.skipped);
  return {
    shard: into,
    generation,
    newestGeneration: snapshots[0]?.generation ?? 0,
    snapshotSeq: fromSeq,
    lastSeq: report.lastSeq,
    walRecords: report.records,
    keys,
    revokedKeys: revoked,
    held,
    trainOnRows,
    skipped,
  };
}
