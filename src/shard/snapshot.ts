/**
 * Atomic snapshots of one shard. Each snapshot is a folder snapshot-{generation} written
 * under a temporary name, every file fsynced, a manifest (sizes and checksums) written
 * last, then renamed into place and the parent folder fsynced. A crash at any point leaves
 * the previous snapshot intact; a torn or corrupt snapshot is detected by its manifest and
 * skipped on load. docs/storage.md is the reference for these formats.
 */
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32Update } from './crc.js';
import { indexCfgToJSON, parseIndexCfg, type IndexCfg } from '../config/index.js';
import { StorageError } from '../errors.js';
import { FaissIndex, type TrainedLayout } from '../native/index.js';
import { Widener, type PendingVectors } from './pending-buffer.js';
import type { MetadataStore } from './metadata-store.js';
import { Shard, type SharedTrained, type ShardOptions } from './shard.js';
import { readdirIfExists, syncDir, writeAll } from './wal-files.js';
import { Packr, Unpackr } from 'msgpackr';
import { Records, type RecordId, type RecordsSnapshot } from './records.js';

const recordsPackr = new Packr({ useRecords: false });
const recordsUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export const SNAPSHOT_FORMAT_VERSION = 1;
const META_MAGIC = 0x544d4644; // "DFMT"
const BUF_MAGIC = 0x42564644; // "DFVB"
const CENTROIDS_MAGIC = 0x45434644; // "DFCE"
const RECORDS_MAGIC = 0x43524644; // "DFRC"
const CENTROIDS_FILE = 'centroids.bin';
const TRAINED_MAGIC = 0x53544644; // "DFTS"
const TRAINED_FILE = 'trained.bin';
const HEADER = 24;

export interface SnapshotManifest {
  format: number;
  generation: number;
  /** Every WAL record with seq <= walSeq is contained in this snapshot. */
  walSeq: number;
  ntotal: number;
  metaCount: number;
  pendingRows: number;
  dim: number;
  createdAt: string;
  files: Record<string, { bytes: number; crc32: number }>;
  /** Idempotency keys of recently stored batches with first id and size (so retries stay deduplicated and revocable across restarts). */
  recentKeys?: Array<[string, number, number?]>;
  /** Id ranges [first, count] of revoked batches: stored, never returned. */
  tombstones?: Array<[number, number]>;
  /** Recently revoked keys: a batch arriving with one is refused. */
  revokedKeys?: string[];
  /** [rank, key] of attempts of batches moved here whose revocation on that rank is not yet confirmed. */
  outgoingRevocations?: Array<[number, string]>;
  /**
   * Records with ids or deletes (issue 16): records.bin holds ids, the dead bitset and the
   * FAISS position -> internal id table; internal ids below indexedUpTo are in index.faiss
   * (which holds fewer vectors once deleted ones were compacted out).
   */
  records?: boolean;
  indexedUpTo?: number;
}

export interface SnapshotInfo {
  generation: number;
  dir: string;
}

const snapName = (gen: number): string => `snapshot-${String(gen).padStart(10, '0')}`;

export async function listSnapshots(shardDir: string): Promise<SnapshotInfo[]> {
  return (await readdirIfExists(shardDir))
    .map((n) => ({ n, m: /^snapshot-(\d{10})$/.exec(n) }))
    .filter((x) => x.m)
    .map((x) => ({ generation: Number(x.m![1]), dir: join(shardDir, x.n) }))
    .sort((a, b) => b.generation - a.generation);
}

/** Writes cfg.json atomically (temp name, fsync, rename). */
export async function writeCfg(shardDir: string, cfg: IndexCfg): Promise<void> {
  await mkdir(shardDir, { recursive: true });
  await writeFileAtomic(join(shardDir, 'cfg.json'), [Buffer.from(indexCfgToJSON(cfg))]);
}

export async function readCfg(shardDir: string): Promise<IndexCfg | null> {
  try {
    return parseIndexCfg(JSON.parse(await readFile(join(shardDir, 'cfg.json'), 'utf8')));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StorageError(`${join(shardDir, 'cfg.json')} is unreadable: ${(err as Error).message}`, { cause: err });
  }
}

async function writeFileAtomic(path: string, parts: readonly Uint8Array[]): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w');
  try {
    for (const p of parts) await fh.write(p);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/**
 * Writes `parts` to `path` and fsyncs it; returns its size and CRC. `parts` may also come in
 * groups produced one after another (buffer.bin widens each float16 batch into one reused
 * buffer only once the group before it is written).
 */
async function writeParts(path: string, parts: readonly Uint8Array[] | AsyncIterable<readonly Uint8Array[]>): Promise<{ bytes: number; crc32: number }> {
  const fh = await open(path, 'w');
  let crc = 0;
  let bytes = 0;
  try {
    for await (const group of Array.isArray(parts) ? [parts] : (parts as AsyncIterable<readonly Uint8Array[]>)) {
      for (const p of group) crc = crc32Update(crc, p);
      // meta.bin has one part per vector: gathered writes, not one awaited write each.
      await writeAll(fh, group, bytes);
      for (const p of group) bytes += p.byteLength;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { bytes, crc32: crc };
}

/**
 * buffer.bin's parts: the header, then the pending rows as float32 whatever the buffer
 * holds. Float16 batches are widened one at a time into one reused buffer, so a snapshot of
 * a large float16 buffer never holds a float32 copy of all of it.
 */
async function* bufferParts(dim: number, pending: readonly PendingVectors[]): AsyncGenerator<readonly Uint8Array[]> {
  const asBytes = (v: Float32Array): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const widener = new Widener(dim);
  let run: Uint8Array[] = [header(BUF_MAGIC, pending.reduce((s, v) => s + v.length, 0) / dim, dim)];
  for (const v of pending) {
    if (v instanceof Float32Array) {
      run.push(asBytes(v));
      continue;
    }
    yield run;
    run = [];
    yield [asBytes(await widener.widen(v))];
  }
  yield run;
}

async function fileCrc(path: string): Promise<{ bytes: number; crc32: number }> {
  // One reused buffer: a read stream allocates a fresh chunk each time, and a 1 GiB
  // index.faiss would leave 1 GiB of dead buffers waiting for a GC.
  const buf = Buffer.allocUnsafeSlow(1 << 20);
  const fh = await open(path, 'r');
  let crc = 0;
  let bytes = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, bytes);
      if (bytesRead === 0) break;
      crc = crc32Update(crc, buf.subarray(0, bytesRead));
      bytes += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return { bytes, crc32: crc };
}

function header(magic: number, count: number, extra: number): Buffer {
  const h = Buffer.alloc(HEADER);
  h.writeUInt32LE(magic, 0);
  h.writeUInt32LE(SNAPSHOT_FORMAT_VERSION, 4);
  h.writeBigUInt64LE(BigInt(count), 8);
  h.writeBigUInt64LE(BigInt(extra), 16);
  return h;
}

/**
 * The state to snapshot, captured in one synchronous step so it is consistent: FAISS
 * holds ntotal vectors, the metadata store metaCount entries, the buffer the rest.
 */
export interface SnapshotCut {
  /** Lets the pending batches' memory go back to its pools once they are written. */
  unpin: () => void;
  index: FaissIndex | null;
  /** Started synchronously with the cut, so no add can change FAISS before it is written. */
  indexWrite: Promise<void> | null;
  indexTmpPath: string | null;
  metaCount: number;
  pending: PendingVectors[];
  walSeq: number;
  recentKeys: Array<[string, number, number]>;
  tombstones: Array<[number, number]>;
  revokedKeys: string[];
  outgoingRevocations: Array<[number, string]>;
  /** The shard's records at the cut (see Records.cut). */
  records: ReturnType<Records['cut']>;
  indexedUpTo: number;
}

/** Writes snapshot `generation` of `shard` from a cut; returns its folder. */
export async function writeSnapshot(shardDir: string, shard: Shard, generation: number, cut: SnapshotCut): Promise<string> {
  const final = join(shardDir, snapName(generation));
  const tmp = snapshotTmpDir(shardDir, generation);
  try {
    const files: SnapshotManifest['files'] = {};
    const pendingRows = cut.pending.reduce((s, v) => s + v.length, 0) / shard.cfg.dim;
    files['buffer.bin'] = await writeParts(join(tmp, 'buffer.bin'), bufferParts(shard.cfg.dim, cut.pending));
    files['meta.bin'] = await writeParts(join(tmp, 'meta.bin'), metadataParts(shard.metadata, cut.metaCount));
    const withRecords = cut.records.mode === 'ids' || cut.records.remap !== null || cut.records.dead.some((b) => b !== 0);
    if (withRecords) {
      const r = cut.records;
      const body = recordsPackr.pack({
        mode: r.mode,
        ids: r.ids(),
        dead: r.dead,
        remap: r.remap ? new Uint8Array(r.remap.buffer, r.remap.byteOffset, r.remap.byteLength) : null,
      });
      files['records.bin'] = await writeParts(join(tmp, 'records.bin'), [header(RECORDS_MAGIC, cut.metaCount, 0), body]);
    }
    if (cut.indexWrite) {
      await cut.indexWrite;
      const fh = await open(cut.indexTmpPath!, 'r+');
      await fh.sync();
      await fh.close();
      files['index.faiss'] = await fileCrc(cut.indexTmpPath!);
    }
    const manifest: SnapshotManifest = {
      format: SNAPSHOT_FORMAT_VERSION,
      generation,
      walSeq: cut.walSeq,
      ntotal: cut.index?.ntotal ?? 0,
      metaCount: cut.metaCount,
      pendingRows,
      dim: shard.cfg.dim,
      createdAt: new Date().toISOString(),
      files,
      recentKeys: cut.recentKeys,
      tombstones: cut.tombstones,
      revokedKeys: cut.revokedKeys,
      outgoingRevocations: cut.outgoingRevocations,
      ...(withRecords ? { records: true, indexedUpTo: cut.indexedUpTo } : {}),
    };
    // cfg travels inside the snapshot too: a snapshot is self-contained.
    await writeParts(join(tmp, 'cfg.json'), [Buffer.from(indexCfgToJSON(shard.cfg))]);
    await writeParts(join(tmp, 'manifest.json'), [Buffer.from(JSON.stringify(manifest, null, 2))]);
    await syncDir(tmp);
    await rename(tmp, final);
    await syncDir(shardDir);
    return final;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw new StorageError(`writing snapshot ${generation} in ${shardDir} failed: ${(err as Error).message}; the previous snapshot is untouched`, { cause: err });
  }
}

/** The temporary folder snapshot `generation` is written in before its rename. */
export function snapshotTmpDir(shardDir: string, generation: number): string {
  return `${join(shardDir, snapName(generation))}.tmp-${process.pid}`;
}

function metadataParts(store: MetadataStore, count: number): Uint8Array[] {
  const lengths = new Uint32Array(count);
  const items: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const b = store.get(i);
    lengths[i] = b.byteLength;
    items.push(b);
  }
  return [header(META_MAGIC, count, 0), new Uint8Array(lengths.buffer), ...items];
}

/** Loads one snapshot folder into a new shard, verifying sizes and checksums first. */
export async function readSnapshot(dir: string, cfgOverride: IndexCfg | null, opts: ShardOptions = {}): Promise<{ shard: Shard; manifest: SnapshotManifest }> {
  let manifest: SnapshotManifest;
  try {
    manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as SnapshotManifest;
  } catch (err) {
    throw new StorageError(`no readable manifest.json (${(err as Error).message})`);
  }
  if (manifest.format > SNAPSHOT_FORMAT_VERSION) {
    throw new StorageError(`snapshot format ${manifest.format} is newer than this dfaiss reads (${SNAPSHOT_FORMAT_VERSION}); upgrade dfaiss`);
  }
  for (const [name, want] of Object.entries(manifest.files)) {
    let got: { bytes: number; crc32: number };
    try {
      got = await fileCrc(join(dir, name));
    } catch (err) {
      throw new StorageError(`${name} missing (${(err as Error).message})`);
    }
    if (got.bytes !== want.bytes) throw new StorageError(`${name} has ${got.bytes} bytes, the manifest says ${want.bytes} (torn file)`);
    if (got.crc32 !== want.crc32) throw new StorageError(`${name} checksum mismatch (corrupt file)`);
  }
  const cfg = cfgOverride ?? parseIndexCfg(JSON.parse(await readFile(join(dir, 'cfg.json'), 'utf8')));
  const index = manifest.files['index.faiss'] ? await FaissIndex.readFile(join(dir, 'index.faiss')) : null;
  const shard = index ? Shard.fromIndex(cfg, index, opts) : new Shard(cfg, opts);

  const meta = await readFile(join(dir, 'meta.bin'));
  checkHeader(meta, META_MAGIC, 'meta.bin');
  const count = Number(meta.readBigUInt64LE(8));
  const lengths = new Uint32Array(meta.buffer.slice(meta.byteOffset + HEADER, meta.byteOffset + HEADER + count * 4));
  const offsets = new Uint32Array(count + 1);
  for (let i = 0; i < count; i++) offsets[i + 1] = offsets[i]! + lengths[i]!;
  const blobStart = HEADER + count * 4;
  shard.metadata.append(meta.subarray(blobStart, blobStart + offsets[count]!), offsets);

  const buf = await readFile(join(dir, 'buffer.bin'));
  checkHeader(buf, BUF_MAGIC, 'buffer.bin');
  const rows = Number(buf.readBigUInt64LE(8));
  const ntotal = index?.ntotal ?? 0;
  // Once deleted vectors were compacted out, FAISS holds fewer than the ids below indexedUpTo.
  const indexed = manifest.records ? (manifest.indexedUpTo ?? -1) : ntotal;
  if (rows + indexed !== count || count !== manifest.metaCount || ntotal > indexed) {
    throw new StorageError(`${count} metadata entries but ${indexed} indexed (${ntotal} in FAISS) + ${rows} buffered vectors`);
  }
  if (rows > 0) shard.restorePending(new Float32Array(buf.buffer.slice(buf.byteOffset + HEADER, buf.byteOffset + HEADER + rows * cfg.dim * 4)));
  if (manifest.records) shard.records = await readRecords(join(dir, 'records.bin'), count, indexed);
  else if (count > 0) shard.records.putAnonymous();
  return { shard, manifest };
}

async function readRecords(path: string, count: number, indexedUpTo: number): Promise<Records> {
  const b = await readFile(path);
  checkHeader(b, RECORDS_MAGIC, 'records.bin');
  if (Number(b.readBigUInt64LE(8)) !== count) throw new StorageError(`records.bin covers ${Number(b.readBigUInt64LE(8))} ids, meta.bin ${count}`);
  const v = recordsUnpackr.unpack(b.subarray(HEADER)) as { mode: RecordsSnapshot['mode']; ids: Array<RecordId | null>; dead: Uint8Array; remap: Uint8Array | null };
  const remap = v.remap ? new Uint32Array(v.remap.buffer.slice(v.remap.byteOffset, v.remap.byteOffset + v.remap.byteLength)) : null;
  if (remap && remap.length > indexedUpTo) throw new StorageError(`records.bin maps ${remap.length} FAISS positions, more than the ${indexedUpTo} indexed ids`);
  return Records.restore({ mode: v.mode, ids: v.ids ?? [], dead: new Uint8Array(v.dead), remap }, count, indexedUpTo, () => false);
}

function checkHeader(b: Buffer, magic: number, name: string): void {
  if (b.byteLength < HEADER || b.readUInt32LE(0) !== magic) throw new StorageError(`${name} is not a dfaiss ${name} file`);
  const v = b.readUInt32LE(4);
  if (v > SNAPSHOT_FORMAT_VERSION) throw new StorageError(`${name} has format version ${v}; this dfaiss reads up to ${SNAPSHOT_FORMAT_VERSION}: upgrade dfaiss`);
}

/**
 * Shared training's result: the trained state every shard of the index was trained with
 * (`trained.bin`: header with the value count and nlist, a u32 length and the JSON layout
 * padded to 8 bytes, a CRC-32C of the values, then the float32 values). Written atomically
 * before a training or install is acknowledged, so a restart gets the same state back.
 * `centroids.bin` (coarse centroids only) is what earlier versions wrote; it is still read.
 */
export async function writeSharedTrained(shardDir: string, state: SharedTrained): Promise<void> {
  const bytes = new Uint8Array(state.data.buffer, state.data.byteOffset, state.data.byteLength);
  const json = Buffer.from(JSON.stringify(state.layout));
  const jsonPart = Buffer.alloc(Math.ceil((4 + json.byteLength) / 8) * 8);
  jsonPart.writeUInt32LE(json.byteLength, 0);
  json.copy(jsonPart, 4);
  const h = header(TRAINED_MAGIC, state.data.length, state.nlist < 0 ? 0 : state.nlist + 1);
  await writeFileAtomic(join(shardDir, TRAINED_FILE), [h, jsonPart, u32le(crc32Update(0, bytes)), bytes]);
  await syncDir(shardDir);
}

/** The shared trained state, or null when this shard never received one (or the file is damaged: the client trains again). */
export async function readSharedTrained(shardDir: string, dim: number): Promise<SharedTrained | null> {
  let b: Buffer;
  try {
    b = await readFile(join(shardDir, TRAINED_FILE));
  } catch {
    return readLegacyCentroids(shardDir, dim);
  }
  try {
    checkHeader(b, TRAINED_MAGIC, TRAINED_FILE);
    const count = Number(b.readBigUInt64LE(8));
    const nlist = Number(b.readBigUInt64LE(16)) - 1;
    const jsonBytes = b.readUInt32LE(HEADER);
    const jsonEnd = HEADER + Math.ceil((4 + jsonBytes) / 8) * 8;
    const layout = JSON.parse(b.toString('utf8', HEADER + 4, HEADER + 4 + jsonBytes)) as TrainedLayout;
    const body = b.subarray(jsonEnd + 8);
    if (body.byteLength !== count * 4 || crc32Update(0, body) !== b.readUInt32LE(jsonEnd)) return null;
    if (!Array.isArray(layout) || layout.reduce((a, p) => a + (Array.isArray(p) ? Number(p[1]) : NaN), 0) !== count) return null;
    return { nlist, layout, data: new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)) };
  } catch {
    return null;
  }
}

/** centroids.bin of earlier versions: rows x dim coarse centroids. */
async function readLegacyCentroids(shardDir: string, dim: number): Promise<SharedTrained | null> {
  let b: Buffer;
  try {
    b = await readFile(join(shardDir, CENTROIDS_FILE));
    checkHeader(b, CENTROIDS_MAGIC, CENTROIDS_FILE);
  } catch {
    return null;
  }
  const rows = Number(b.readBigUInt64LE(8));
  const body = b.subarray(HEADER + 8);
  if (Number(b.readBigUInt64LE(16)) !== dim || body.byteLength !== rows * dim * 4 || crc32Update(0, body) !== b.readUInt32LE(HEADER)) return null;
  const data = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
  return { nlist: rows, layout: [['coarse', data.length]], data };
}

function u32le(v: number): Uint8Array {
  // 8 bytes (u32 + padding) keep the float32 body 8-aligned in the file.
  const b = Buffer.alloc(8);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

/** Removes leftovers of interrupted snapshots and all but the newest `keep` snapshots. */
export async function pruneSnapshots(shardDir: string, keep: number): Promise<SnapshotInfo[]> {
  const names = await readdir(shardDir).catch(() => [] as string[]);
  for (const n of names) if (/^snapshot-\d{10}\.tmp-\d+$/.test(n)) await rm(join(shardDir, n), { recursive: true, force: true });
  const snaps = await listSnapshots(shardDir);
  for (const s of snaps.slice(keep)) await rm(s.dir, { recursive: true, force: true });
  return snaps.slice(0, keep);
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
