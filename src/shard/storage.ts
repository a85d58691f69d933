/**
 * Saving and loading one shard's folder ({root}/{indexId}/{rank}/):
 *   cfg.json     the index configuration (the original's snake_case form)
 *   index.faiss  the FAISS index (FAISS's own format), absent while untrained
 *   meta.bin     packed metadata of every vector, in id order
 *   buffer.bin   vectors received but not yet in FAISS (float32 rows)
 * Each file is written under a temporary name, fsynced and renamed, so a crash never
 * leaves a torn file in place of a good one. docs/storage.md describes the formats.
 */
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { indexCfgToJSON, parseIndexCfg, type IndexCfg } from '../config/index.js';
import { StorageError } from '../errors.js';
import { FaissIndex } from '../native/index.js';
import type { MetadataStore } from './metadata-store.js';
import { Shard, type ShardOptions } from './shard.js';

const META_MAGIC = 0x544d4644; // "DFMT" little-endian
const BUF_MAGIC = 0x42564644; // "DFVB"
const FORMAT_VERSION = 1;

export const FILES = { cfg: 'cfg.json', index: 'index.faiss', meta: 'meta.bin', buffer: 'buffer.bin' } as const;

async function writeAtomic(path: string, parts: readonly Uint8Array[]): Promise<void> {
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

function u32Header(magic: number, count: number, extra = 0): Uint8Array {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(magic, 0);
  h.writeUInt32LE(FORMAT_VERSION, 4);
  h.writeBigUInt64LE(BigInt(count), 8);
  h.writeBigUInt64LE(BigInt(extra), 16);
  return h;
}

/** Writes a consistent snapshot: FAISS contents, metadata and buffer as of one moment. */
export async function saveShard(shard: Shard, dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    await shard.idle();
    // Capture everything in one tick: the index's read lock (taken synchronously by
    // writeFile) keeps later adds from changing FAISS until its file is written.
    const index = shard.faissIndex;
    const metaCount = shard.metadata.size;
    const pending = shard.pendingVectors();
    const indexWrite = index ? index.writeFile(`${join(dir, FILES.index)}.tmp-${process.pid}`) : null;
    const metaParts = metadataParts(shard.metadata, metaCount);
    const pendingRows = pending.reduce((s, v) => s + v.length, 0) / shard.cfg.dim;
    await writeAtomic(join(dir, FILES.buffer), [
      u32Header(BUF_MAGIC, pendingRows, shard.cfg.dim),
      ...pending.map((v) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength)),
    ]);
    await writeAtomic(join(dir, FILES.meta), metaParts);
    if (indexWrite) {
      await indexWrite;
      const fh = await open(`${join(dir, FILES.index)}.tmp-${process.pid}`, 'r+');
      await fh.sync();
      await fh.close();
      await rename(`${join(dir, FILES.index)}.tmp-${process.pid}`, join(dir, FILES.index));
    } else {
      await rm(join(dir, FILES.index), { force: true });
    }
    await writeAtomic(join(dir, FILES.cfg), [Buffer.from(indexCfgToJSON(shard.cfg))]);
  } catch (err) {
    throw new StorageError(`saving index to ${dir} failed: ${(err as Error).message}; the previous files are untouched`, { cause: err });
  }
}

function metadataParts(store: MetadataStore, count: number): Uint8Array[] {
  const lengths = new Uint32Array(count);
  const items: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const b = store.get(i);
    lengths[i] = b.byteLength;
    items.push(b);
  }
  return [u32Header(META_MAGIC, count), new Uint8Array(lengths.buffer), ...items];
}

export async function shardExists(dir: string): Promise<boolean> {
  try {
    await stat(join(dir, FILES.meta));
    return true;
  } catch {
    return false;
  }
}

/** Reads a shard folder back; `cfg` overrides the stored cfg.json. */
export async function loadShard(dir: string, cfg: IndexCfg | null, opts: ShardOptions = {}): Promise<Shard> {
  try {
    const useCfg = cfg ?? parseIndexCfg(JSON.parse(await readFile(join(dir, FILES.cfg), 'utf8')));
    let index: FaissIndex | null = null;
    try {
      await stat(join(dir, FILES.index));
      index = await FaissIndex.readFile(join(dir, FILES.index));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const shard = index ? Shard.fromIndex(useCfg, index, opts) : new Shard(useCfg, opts);
    const meta = await readFile(join(dir, FILES.meta));
    checkHeader(meta, META_MAGIC, 'meta.bin');
    const count = Number(meta.readBigUInt64LE(8));
    const lengths = new Uint32Array(meta.buffer.slice(meta.byteOffset + 24, meta.byteOffset + 24 + count * 4));
    const offsets = new Uint32Array(count + 1);
    for (let i = 0; i < count; i++) offsets[i + 1] = offsets[i]! + lengths[i]!;
    const blobStart = 24 + count * 4;
    shard.metadata.append(meta.subarray(blobStart, blobStart + offsets[count]!), offsets);

    const buf = await readFile(join(dir, FILES.buffer));
    checkHeader(buf, BUF_MAGIC, 'buffer.bin');
    const rows = Number(buf.readBigUInt64LE(8));
    const ntotal = index?.ntotal ?? 0;
    if (rows + ntotal !== count) {
      throw new StorageError(`${dir}: ${count} metadata entries but ${ntotal} indexed + ${rows} buffered vectors`);
    }
    if (rows > 0) {
      const vectors = new Float32Array(buf.buffer.slice(buf.byteOffset + 24, buf.byteOffset + 24 + rows * useCfg.dim * 4));
      shard.restorePending(vectors);
    }
    for (const [name, value] of nprobeParams(useCfg, index)) await shard.setParameter(name, value);
    return shard;
  } catch (err) {
    if (err instanceof StorageError) throw err;
    throw new StorageError(`loading index from ${dir} failed: ${(err as Error).message}`, { cause: err });
  }
}

function nprobeParams(cfg: IndexCfg, index: FaissIndex | null): Array<[string, number]> {
  if (!index || index.nlist < 0) return [];
  return [['nprobe', cfg.nprobe]];
}

function checkHeader(b: Buffer, magic: number, name: string): void {
  if (b.byteLength < 24 || b.readUInt32LE(0) !== magic) throw new StorageError(`${name} is not a dfaiss ${name} file`);
  const v = b.readUInt32LE(4);
  if (v > FORMAT_VERSION) throw new StorageError(`${name} has format version ${v}; this dfaiss reads up to ${FORMAT_VERSION}: upgrade dfaiss`);
}

export async function removeShardDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
