/**
 * Server methods for records with ids (issue 16): delete, get, iterate, range search,
 * compaction, and the pieces addIndexData and search use for ids and the 'cosine' metric.
 * docs/protocol.md lists them for other languages.
 */
import { ValidationError } from '../errors.js';
import { normalizeL2, toMatrix } from '../native/index.js';
import type { Attachment } from '../protocol/index.js';
import { concatBytes, encodeMetadata, offsetsBytes } from '../protocol/metadata.js';
import { checkRecordIds, homeOf, type RecordId } from '../shard/records.js';
import { MAX_IDS_PER_CALL } from '../contract.js';
import { parseFilter } from '../filter/index.js';
import { filteredIteratePage, idsMatching } from '../shard/filtered-search.js';
import { compact, findRecords, iteratePage, rangeSearch, readRecords } from '../shard/shard-records.js';
import type { Shard } from '../shard/shard.js';
import { implement } from './implement.js';
import type { IndexServer } from './index-server.js';

/** float32 values of stored vectors one getRecords / iterateRecords reply carries at most (32 MiB). */
export const VECTOR_VALUES_PER_REPLY = 1 << 23;

export function buildRecordMethods(server: IndexServer) {
  return {
    /** Deletes records by id (durable before the reply). result: { deleted: count, unknown: ids this server does not hold }. */
    deleteRecords: implement('deleteRecords', async ({ indexId, ids, filter }) => {
        const r = await server.withShard(indexId, async (d) => {
          if (filter === undefined) return d.delete(checkRecordIds(ids, 'ids', { unique: false }));
          // By filter: the ids it admits now, deleted as one logged batch (no unknown ids).
          const node = parseFilter(filter);
          if (d.shard.records.mode === 'anon') {
            throw new ValidationError('filter', 'an index whose records have ids (delete by filter removes records by id; this index stores vectors without ids)', filter);
          }
          // Logged in parts of at most MAX_IDS_PER_CALL ids, as a client splits a long id list.
          const matching = await idsMatching(d.shard, node);
          const deleted: RecordId[] = [];
          for (let i = 0; i < matching.length; i += MAX_IDS_PER_CALL) deleted.push(...(await d.delete(matching.slice(i, i + MAX_IDS_PER_CALL))).deleted);
          return { deleted, unknown: [] };
        });
        return { result: { deleted: r.deleted.length, unknown: r.unknown } };
      }),

    /**
     * Records by id. result: { ids: found ids, unknown }. attachments out: metadata blob +
     * offsets (u8) of the found ids, in order, and their vectors (f32) with returnEmbeddings.
     */
    getRecords: implement('getRecords', async ({ indexId, ids, returnEmbeddings }) => {
        const shard = server.getShard(indexId);
        const { ats, unknown } = findRecords(shard, checkRecordIds(ids, 'ids', { unique: false }));
        return recordsReply(shard, ats, returnEmbeddings ?? false, { unknown });
      }),

    /**
     * One page of this shard's live records in internal-id order, from internal id `after`.
     * result: { ids, ats (internal ids), next (cursor to resume from, null when exhausted) };
     * attachments as getRecords.
     */
    iterateRecords: implement('iterateRecords', async ({ indexId, after, limit, returnEmbeddings, filter }) => {
        const shard = server.getShard(indexId);
        // With vectors a page carries at most 32 MiB of them (well under the frame limit); `next` goes on from there.
        const pageSize = returnEmbeddings ? Math.max(1, Math.min(limit, Math.floor(VECTOR_VALUES_PER_REPLY / shard.cfg.dim))) : limit;
        const page = filter === undefined ? iteratePage(shard, after, pageSize) : await filteredIteratePage(shard, after, pageSize, parseFilter(filter));
        return recordsReply(shard, page.ats, returnEmbeddings ?? false, { next: page.next, ats: page.ats });
      }),

    /**
     * attachments in: queries (f32). out: lims (i64, n+1), distances (f32), labels (i64,
     * internal ids), metadata blob + offsets (u8), record ids blob + offsets (u8).
     * Hits are within `radius` (squared L2 below it; inner product / cosine above it).
     */
    rangeSearch: implement('rangeSearch', async ({ indexId, radius }, ctx) => {
        const durable = server.getDurable(indexId);
        const { shard } = durable;
        const queries = toMatrix(ctx.attachments[0] as Float32Array, shard.cfg.dim, 'queries').data;
        prepareQueries(shard, queries);
        // hnswsq builds L2 indexes: over unit vectors, cosine > r  <=>  squared L2 < 2 (1 - r).
        const l2Cosine = cosineOverL2(shard);
        const r = await rangeSearch(shard, queries, l2Cosine ? 2 * (1 - radius) : radius);
        if (l2Cosine) l2ToCosine(r.distances);
        const { blob, offsets } = hitMetadata(shard, r.labels);
        const ids = hitIds(shard, r.labels);
        const lims = BigInt64Array.from(r.lims, (v) => BigInt(v));
        const attachments: Attachment[] = [lims, r.distances, r.labels, blob, offsetsBytes(offsets), ids.blob, offsetsBytes(ids.offsets)];
        return { result: { n: r.n, metric: shard.cfg.metric, held: durable.heldCount }, attachments };
      }),

    /** Removes deleted vectors from FAISS now (compaction also runs in the background). result: { removed }. */
    compact: implement('compact', async ({ indexId }) => ({
        result: {
          removed: await server.withShard(indexId, async (d) => {
            // A background compaction may be running with an older list: run until none is left (bounded).
            let removed = 0;
            for (let i = 0; i < 4 && (d.shard.compacting || d.shard.records.toRemove.length > 0); i++) removed += await compact(d.shard);
            return removed;
          }),
        },
      })),
  };
}

async function recordsReply<E extends object>(shard: Shard, ats: number[], returnEmbeddings: boolean, extra: E) {
  const { records, vectors } = await readRecords(shard, ats, returnEmbeddings);
  let total = 0;
  const offsets = new Uint32Array(records.length + 1);
  records.forEach((r, i) => (offsets[i + 1] = total += r.metadata.byteLength));
  const blob = concatBytes(
    records.map((r) => r.metadata),
    total,
  );
  const attachments: Attachment[] = [blob, offsetsBytes(offsets)];
  if (vectors) attachments.push(vectors);
  return { result: { ids: records.map((r) => r.id), ...extra }, attachments };
}

/** 'cosine': queries are normalised in place (they are this request's own buffer). */
export function prepareQueries(shard: Shard, queries: Float32Array): void {
  if (shard.cfg.metric === 'cosine') normalizeL2(queries, shard.cfg.dim);
}

/**
 * 'cosine': a batch is normalised before it is logged (float32: in place, in the request's
 * buffer; float16: the widened copy, while the log keeps the float16 as it arrived and the
 * replay normalises again).
 */
export function prepareVectors(metric: string, dim: number, vectors: Float32Array): void {
  if (metric === 'cosine') normalizeL2(vectors, dim);
}

/** A 'cosine' index whose FAISS type is L2-only (hnswsq): scores come back as squared L2 over unit vectors. */
export function cosineOverL2(shard: Shard): boolean {
  return shard.cfg.metric === 'cosine' && shard.faissIndex?.metric === 'l2';
}

/** Squared L2 between unit vectors -> cosine similarity (1 - d / 2), in place. */
export function l2ToCosine(d: Float32Array): void {
  for (let i = 0; i < d.length; i++) if (Number.isFinite(d[i]!)) d[i] = 1 - d[i]! / 2;
}

/** Checks the ids of an add/upsert batch of n vectors: one per vector, no duplicates (ValidationError naming the first). */
export function batchIds(ids: unknown, n: number): RecordId[] {
  if (!Array.isArray(ids)) throw new ValidationError('ids', 'an array of record ids', ids);
  return checkRecordIds(ids, 'ids', { unique: true, n });
}

/**
 * Records live on their home server only (docs/protocol.md, "Records"): a batch with ids
 * must say how many servers its client places over (`servers`), and every id must hash to
 * this server's rank, so a client with a different server list cannot put a record on a
 * second server.
 */
export function checkHome(ids: readonly RecordId[], servers: number | undefined, rank: number): void {
  if (servers === undefined) throw new ValidationError('servers', 'the number of servers the client places records over (required with ids)', servers);
  if (rank >= servers) throw new ValidationError('servers', `more than this server's rank ${rank}`, servers);
  for (let i = 0; i < ids.length; i++) {
    const home = homeOf(ids[i]!, servers);
    if (home !== rank) throw new ValidationError(`ids[${i}]`, `a record whose home is this server (rank ${rank} of ${servers}); its home is rank ${home}`, ids[i]);
  }
}

/** The record id of every hit (nil for -1 and for vectors without ids), packed like metadata. */
export function hitIds(shard: Shard, labels: BigInt64Array): { blob: Uint8Array; offsets: Uint32Array } {
  const ids = new Array<RecordId | null>(labels.length);
  for (let i = 0; i < labels.length; i++) {
    const l = Number(labels[i]);
    ids[i] = l >= 0 ? (shard.records.idAt(l) ?? null) : null;
  }
  return encodeMetadata(ids, ids.length, 'ids');
}

function hitMetadata(shard: Shard, labels: BigInt64Array): { blob: Uint8Array; offsets: Uint32Array } {
  const offsets = new Uint32Array(labels.length + 1);
  const items: Uint8Array[] = [];
  let total = 0;
  for (let i = 0; i < labels.length; i++) {
    const b = shard.metadata.get(Number(labels[i]));
    items.push(b);
    total += b.byteLength;
    offsets[i + 1] = total;
  }
  return { blob: concatBytes(items, total), offsets };
}
