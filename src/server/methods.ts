/**
 * The server's method table: the only things a client can ask for. Each entry has a zod
 * schema for its arguments (validated before the handler runs) and, where tensors travel,
 * the attachments it expects. docs/protocol.md lists the same table for other languages.
 */
import { checkCallSearchParams, parseIndexCfg, type CallSearchParams } from '../config/index.js';
import { type ShardInfoReply, type ParsedArgsOf, type ResultOf } from '../contract.js';
import { ValidationError } from '../errors.js';
import { checkHalfMatrix } from '../vectors.js';
import { checkProbeLists, faissBuild, fp16ToFp32Async, toMatrix } from '../native/index.js';
import type { Attachment } from '../protocol/index.js';
import { concatBytes, decodeMetadataItem, offsetsBytes, offsetsView, validateMetadata } from '../protocol/metadata.js';
import type { SharedProbes } from '../shard/shard-search.js';
import { checkBatch, type Shard } from '../shard/shard.js';
import { waitsAsFloat16 } from '../shard/pending-buffer.js';
import { implement, type ServerMethods } from './implement.js';
import type { IndexServer } from './index-server.js';
import { parseFilter } from '../filter/index.js';
import { filteredSearch, type FilteredSearchResult } from '../shard/filtered-search.js';
import { batchIds, buildRecordMethods, checkHome, cosineOverL2, hitIds, l2ToCosine, prepareQueries, prepareVectors } from './record-methods.js';

export function buildMethods(server: IndexServer): ServerMethods {
  return {
    ...buildRecordMethods(server),

    createIndex: implement('createIndex', async ({ indexId, cfg }) => ({ result: await server.createIndex(indexId, parseIndexCfg(cfg)) })),

    /** attachments: vectors (f32, or f16 converted here), metadata blob (u8), metadata offsets (u8: n+1 LE u32). */
    addIndexData: implement('addIndexData', async ({ indexId, n, trainAsync, key, movedFrom, ids: rawIds, upsert, servers }, ctx) => {
        const [raw, blob, offBytes] = ctx.attachments;
        if (!(raw instanceof Float32Array || raw instanceof Uint16Array)) {
          throw new ValidationError('vectors', 'a f32 or f16 attachment', raw);
        }
        if (!(blob instanceof Uint8Array) || !(offBytes instanceof Uint8Array) || ctx.attachments.length !== 3) {
          throw new ValidationError('metadata', 'two u8 attachments after the vectors: packed values and n+1 u32 offsets');
        }
        const offsets = offsetsView(offBytes);
        validateMetadata(blob, offsets, n);
        // The shape is checked against the index now (before any conversion) and again in
        // addBatch, under the index's lock (a reload may change the configuration).
        const { cfg } = server.getShard(indexId);
        checkBatch(cfg, raw, n);
        // The vectors stay in this request's receive buffer, kept past the reply until FAISS
        // has them (no copy); float16 waits as it arrived (half the memory) and is widened
        // chunk by chunk for FAISS, except where it is widened now (waitsAsFloat16).
        const widen = raw instanceof Uint16Array && !waitsAsFloat16(cfg.metric);
        // Checked once here (shape, NaN / Infinity): the shard and FAISS's binding take it as it is.
        const vectors =
          raw instanceof Float32Array ? toMatrix(raw, cfg.dim, 'vectors').data : widen ? toMatrix(await fp16ToFp32Async(raw), cfg.dim, 'vectors').data : checkHalfMatrix(raw, cfg.dim, 'vectors');
        if (upsert && !rawIds) throw new ValidationError('ids', 'one id per vector (upsert replaces records by id)', rawIds);
        const ids = rawIds ? batchIds(rawIds, n) : undefined;
        if (ids) checkHome(ids, servers, server.rank);
        if (vectors instanceof Float32Array) prepareVectors(cfg.metric, cfg.dim, vectors);
        const release = widen ? undefined : ctx.retainAttachments();
        const first = await server.addBatch(indexId, vectors, blob.slice(), offsets.slice(), {
          trainAsync: trainAsync ?? true,
          key,
          release,
          movedFrom,
          ...(ids ? { ids, upsert: upsert ?? false } : {}),
          // Widened float16 is logged as it arrived; the request's memory outlives the log write (this handler awaits it).
          ...(widen ? { arrived: raw as Uint16Array } : {}),
        });
        // An upsert resolves once the new versions are searchable (the old ones hidden in the same tick).
        if (upsert && first >= 0) await server.getShard(indexId).whenIndexed(first + n);
        const { state, info } = server.getShard(indexId);
        // firstId -1: the client revoked this key (it stored the batch elsewhere); nothing stored.
        // buffered lets the client start a shared training once the cluster holds trainNum vectors.
        return { result: first < 0 ? { firstId: -1, revoked: true, state } : { firstId: first, state, buffered: info.buffered } };
      }),

    /**
     * The client stored batch `key` on another server after this one failed while holding
     * it: hide it here if it was stored, refuse it if it arrives later. Idempotent.
     */
    revokeBatch: implement('revokeBatch', async ({ indexId, key }) => ({ result: await server.withShard(indexId, (d) => d.revoke(key)) })),

    /** The revocations this shard holds for other servers (batches moved here): [rank, key] pairs to deliver with revokeBatch. */
    heldRevocations: implement('heldRevocations', ({ indexId }) => ({ result: server.getDurable(indexId).heldRevocations() })),

    /** A client delivered (revokeBatch answered) these held revocations: this shard forgets them. Idempotent. */
    revocationsDelivered: implement('revocationsDelivered', async ({ indexId, pairs }) => ({ result: { forgotten: await server.withShard(indexId, (d) => d.delivered(pairs)) } })),

    syncTrain: implement('syncTrain', async ({ indexId }) => ({ result: { trained: await server.withShard(indexId, (d) => d.shard.syncTrain()) } })),

    asyncTrain: implement('asyncTrain', async ({ indexId }) => {
        await server.withShard(indexId, async (d) => d.shard.asyncTrain());
      }),

    addBufferToIndex: implement('addBufferToIndex', async ({ indexId }) => {
        await server.withShard(indexId, (d) => d.shard.addBufferToIndex());
      }),

    /** Shared training, step 1 — attachments out: up to `count` rows sampled from this shard's buffer (f32). */
    sampleVectors: implement('sampleVectors', ({ indexId, count, offset, of }) => {
        const shard = server.getShard(indexId);
        const sample = shard.sample(count, offset ?? 0, of ?? shard.info.buffered);
        return { result: { n: sample.length / shard.cfg.dim }, attachments: [sample] };
      }),

    /**
     * Shared training, step 1b, on the trainer — attachments in: rows [offset, offset + n) of
     * the cluster's training sample of `total` rows (f32), so a sample of any size travels in
     * bounded frames.
     */
    stageSample: implement('stageSample', ({ indexId, sampleId, offset, total }, ctx) => {
        const shard = server.getShard(indexId);
        const rows = toMatrix(ctx.attachments[0] as Float32Array, shard.cfg.dim, 'sample').data;
        shard.stageSample(sampleId, offset, total, rows);
      }),

    /**
     * Shared training, step 2, on one server — attachments in: the training sample (f32,
     * may be empty: then this shard's own buffer). out: the trained state (f32, parts back to
     * back as `layout` lists them: coarse centroids, PQ codebooks, SQ ranges, transforms).
     */
    trainShared: implement('trainShared', ({ indexId, sampleId, total, own }, ctx) =>
        server.withShard(indexId, async (durable) => {
          const [sample] = ctx.attachments;
          if (ctx.attachments.length > 1 || (sample !== undefined && !(sample instanceof Float32Array))) {
            throw new ValidationError('sample', 'at most one f32 attachment (the training vectors)', sample);
          }
          // The sample is used in place, and its receive buffer is freed as soon as the
          // training is done, before this shard starts adding its own buffer. A staged sample
          // (stageSample) gets this shard's own share added here, without a round trip.
          const rows = sampleId
            ? durable.shard.stagedSample(sampleId, total ?? 0, own ?? { offset: 0, count: 0, of: 0 })
            : sample && sample.length > 0
              ? toMatrix(sample, durable.cfg.dim, 'sample').data
              : new Float32Array(0);
          const release = ctx.retainAttachments();
          try {
            const state = await durable.trainShared(rows, { threads: server.trainThreads, sampleDone: release });
            return { result: { nlist: state.nlist, dim: durable.cfg.dim, layout: state.layout }, attachments: [state.data] };
          } finally {
            release();
          }
        })),

    /**
     * Shared training, step 3, on every other server — attachments in: the trainer's state
     * (f32) with its `nlist` and `layout`; without a layout, coarse centroids (nlist x dim),
     * as clients before trained-state sharing sent.
     */
    installTrained: implement('installTrained', async ({ indexId, nlist, layout }, ctx) => {
        const [data] = ctx.attachments;
        if (!(data instanceof Float32Array) || ctx.attachments.length !== 1) {
          throw new ValidationError(layout ? 'state' : 'centroids', 'one f32 attachment: the trained state from trainShared', data);
        }
        const dim = server.getShard(indexId).cfg.dim;
        if (!layout && (data.length === 0 || data.length % dim !== 0)) {
          throw new ValidationError('centroids', `nlist x dim=${dim} float32 values, nlist >= 1`, `${data.length} values`);
        }
        if (!layout) toMatrix(data, dim, 'centroids'); // finite values only
        const state = layout ? { nlist: nlist ?? -1, layout, data: data.slice() } : { nlist: data.length / dim, layout: [['coarse', data.length]] as Array<[string, number]>, data: data.slice() };
        return { result: { installed: await server.withShard(indexId, (d) => d.installTrained(state)) } };
      }),

    getState: implement('getState', ({ indexId }) => ({ result: server.getShard(indexId).state })),

    /** ntotal of one index; 0 for an index this server does not have (as the original). */
    getNtotal: implement('getNtotal', ({ indexId }) => ({ result: server.findShard(indexId)?.ntotal ?? 0 })),

    getInfo: implement('getInfo', ({ indexId }) => {
        const durable = server.getDurable(indexId);
        const { shard } = durable;
        // The index type's fields let a client check search parameters before sending them.
        const { indexBuilderType, faissFactory, centroids, inferCentroids } = shard.cfg;
        return {
          result: { ...shard.info, indexBuilderType, faissFactory, centroids, inferCentroids, heldRevocations: durable.heldCount, error: shard.error?.message ?? null },
        };
      }),

    /** Distinct metadata[customMetaIdIdx] values (the whole value when metadata is not an array). */
    getIds: implement('getIds', ({ indexId }) => {
        const shard = server.getShard(indexId);
        const idx = shard.cfg.customMetaIdIdx;
        const ids = new Set<unknown>();
        for (let i = 0; i < shard.metadata.size; i++) {
          if (shard.isHidden(i) || !shard.records.isCurrent(i)) continue; // revoked, deleted or replaced
          const m = decodeMetadataItem(shard.metadata.get(i));
          ids.add(Array.isArray(m) ? m[idx] : m);
        }
        return { result: [...ids] };
      }),

    getCentroids: implement('getCentroids', async ({ indexId }) => {
        const c = await server.getShard(indexId).centroids();
        return { result: { nlist: c.nlist, dim: c.dim }, attachments: [c.data] };
      }),

    setSearchParameter: implement('setSearchParameter', async ({ indexId, name, value }) => {
        await server.withShard(indexId, (d) => d.shard.setParameter(name, value));
      }),

    setOmpNumThreads: implement('setOmpNumThreads', ({ threads }) => {
        server.setOmpNumThreads(threads);
      }),

    saveIndex: implement('saveIndex', async ({ indexId }) => {
        await server.saveIndex(indexId);
      }),

    loadIndex: implement('loadIndex', async ({ indexId, cfg, forceReload }) => ({
        result: await server.loadIndex(indexId, cfg ? parseIndexCfg(cfg) : null, forceReload ?? true), // the original's default
      })),

    dropIndex: implement('dropIndex', async ({ indexId }) => {
        await server.dropIndex(indexId);
      }),

    /** Every index on this server with its state and counts, plus process memory and the FAISS build. */
    status: implement('status', () => {
        const indexes: Record<string, ShardInfoReply> = {};
        for (const id of server.indexIds()) {
          const durable = server.getDurable(id);
          indexes[id] = { ...durable.shard.info, heldRevocations: durable.heldCount };
        }
        const mem = process.memoryUsage();
        return { result: { rank: server.rank, threads: server.threadCount, rssBytes: mem.rss, heapBytes: mem.heapUsed, faiss: faissBuild, indexes, ...server.statusExtras() } };
      }),

    /**
     * attachments in: queries (f32, n*dim). out: distances (f32 n*k), labels (i64 n*k, this
     * shard's ids, -1 = none), metadata blob + offsets (u8, n*k entries, empty for -1), and
     * the hits' vectors (f32 n*k*dim) when returnEmbeddings.
     */
    search: implement('search', async ({ indexId, k, returnEmbeddings, params, filter, probes }, ctx) => {
        const durable = server.getDurable(indexId);
        const { shard } = durable;
        const { queries, callParams } = searchInput(shard, ctx.attachments[0] as Float32Array, params);
        if (!probes && ctx.attachments.length > 1) throw new ValidationError('attachments', 'one attachment (the queries) without probes', ctx.attachments.length);
        // A filter: only the records it admits are scored (shard/filtered-search.ts); that
        // path probes for itself (it may widen nprobe), so it takes no shipped probe lists.
        if (probes && filter !== undefined) throw new ValidationError('probes', 'no probes with a filter (a filtered search chooses its own probe lists)', 'probes and a filter');
        const shared = probes ? sharedProbes(shard, queries, probes, ctx.attachments) : undefined;
        const r =
          filter !== undefined
            ? await filteredSearch(shard, queries, k, returnEmbeddings ?? false, parseFilter(filter), callParams)
            : await shard.search(queries, k, returnEmbeddings ?? false, callParams, shared);
        if (cosineOverL2(shard)) l2ToCosine(r.distances);
        const { blob, offsets } = hitMetadata(shard.metadata, r.labels);
        const attachments: Attachment[] = [r.distances, r.labels, blob, offsetsBytes(offsets)];
        if (r.vectors) attachments.push(r.vectors);
        // Records with ids: each hit's id, packed like metadata, as the last two attachments.
        const withIds = shard.records.mode === 'ids';
        if (withIds) {
          const ids = hitIds(shard, r.labels);
          attachments.push(ids.blob, offsetsBytes(ids.offsets));
        }
        // state: a client that sees an untrained shard of a shared-training index checks
        // whether a training is left to finish (its client may be gone).
        // held: revocations this shard holds for other servers; a client that does not know
        // them all yet fetches them (heldRevocations) before trusting the other shards' hits.
        const held = durable.heldCount;
        const filtered = 'filtered' in r ? { filtered: (r as FilteredSearchResult).filtered } : {};
        return {
          result: { n: r.n, k, metric: shard.cfg.metric, ntotal: shard.ntotal, state: shard.state, held, ...(withIds ? { ids: true } : {}), ...filtered, ...(r.preassigned ? { preassigned: true } : {}) },
          attachments,
        };
      }),

    /**
     * The coarse quantizer's half of an IVF search, done once for a fan-out search (issue 15):
     * in: queries (f32). out: assign (i64, n x nprobe), coarse distances (f32, n x nprobe) and
     * the quantizer fingerprint the other shards compare with their own.
     */
    quantize: implement('quantize', async ({ indexId, params }, ctx) => {
        const shard = server.getShard(indexId);
        const { queries, callParams } = searchInput(shard, ctx.attachments[0] as Float32Array, params);
        const index = shard.faissIndex;
        const reason = !index || !index.isTrained ? 'not trained' : index.preassignRefusal;
        if (!index || reason !== '') return { result: { fingerprint: null, nprobe: 0, reason } };
        const fingerprint = await index.quantizerFingerprint();
        const lists = await index.quantize(queries, callParams?.nprobe ?? index.nprobe);
        return { result: { fingerprint, nprobe: lists.nprobe }, attachments: [lists.assign, lists.coarse] };
      }),
  };
}

/**
 * A search's queries (checked against the index, normalised for cosine) and its per-call
 * parameters (never changing the index other clients search), checked against the real nlist.
 */
function searchInput(shard: Shard, raw: Float32Array, params: Record<string, number> | undefined): { queries: Float32Array; callParams: CallSearchParams | undefined } {
  const queries = toMatrix(raw, shard.cfg.dim, 'queries').data;
  const nlist = shard.faissIndex?.nlist;
  const callParams = params ? checkCallSearchParams(shard.cfg, params, nlist !== undefined && nlist > 0 ? { nlist } : {}) : undefined;
  prepareQueries(shard, queries);
  return { queries, callParams };
}

/** A search's probe lists (attachments 1 and 2), checked against its queries and this shard's lists. */
function sharedProbes(shard: Shard, queries: Float32Array, probes: { fingerprint: string; nprobe: number }, attachments: readonly Attachment[]): SharedProbes {
  const [, assign, coarse] = attachments;
  if (attachments.length !== 3) throw new ValidationError('attachments', 'three attachments with probes: queries (f32), assign (i64), coarse (f32)', attachments.length);
  const lists = { nprobe: probes.nprobe, assign: assign as BigInt64Array, coarse: coarse as Float32Array };
  const nlist = shard.faissIndex?.nlist ?? -1;
  checkProbeLists(lists, queries.length / shard.cfg.dim, nlist > 0 ? nlist : 1 << 24);
  return { fingerprint: probes.fingerprint, lists };
}

/** Packs the stored metadata of every hit (empty entries for -1) into blob + offsets. */
function hitMetadata(store: { get(id: number): Uint8Array; size: number }, labels: BigInt64Array): { blob: Uint8Array; offsets: Uint32Array } {
  const offsets = new Uint32Array(labels.length + 1);
  const items: Uint8Array[] = [];
  let total = 0;
  for (let i = 0; i < labels.length; i++) {
    const id = Number(labels[i]);
    if (id >= 0 && id < store.size) {
      const b = store.get(id);
      items.push(b);
      total += b.byteLength;
    }
    offsets[i + 1] = total;
  }
  return { blob: concatBytes(items, total), offsets };
}
