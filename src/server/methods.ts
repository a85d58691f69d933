/**
 * The server's method table: the only things a client can ask for. Each entry has a zod
 * schema for its arguments (validated before the handler runs) and, where tensors travel,
 * the attachments it expects. docs/protocol.md lists the same table for other languages.
 */
import { z } from 'zod';
import { parseIndexCfg } from '../config/index.js';
import { ValidationError } from '../errors.js';
import { MAX_K, fp16ToFp32Async, toMatrix } from '../native/index.js';
import { defineMethod, type Attachment, type MethodTable } from '../protocol/index.js';
import { concatBytes, decodeMetadataItem, offsetsBytes, offsetsView, validateMetadata } from '../protocol/metadata.js';
import { checkBatch } from '../shard/shard.js';
import type { IndexServer } from './index-server.js';

const indexId = z.string().min(1).max(128);
const cfgObject = z.record(z.string(), z.unknown());
const byIndex = z.object({ indexId }).strict();
/** [rank, idempotency key] of batch attempts on servers that failed while holding them. */
const movedFrom = z.array(z.tuple([z.number().int().min(0).max(1_000_000), z.string().min(1).max(128)])).max(1024);

export function buildMethods(server: IndexServer): MethodTable {
  return {
    createIndex: defineMethod({
      schema: z.object({ indexId, cfg: cfgObject }).strict(),
      handler: async ({ indexId, cfg }) => ({ result: await server.createIndex(indexId, parseIndexCfg(cfg)) }),
    }),

    /** attachments: vectors (f32, or f16 converted here), metadata blob (u8), metadata offsets (u8: n+1 LE u32). */
    addIndexData: defineMethod({
      schema: z
        .object({ indexId, n: z.number().int().positive(), trainAsync: z.boolean().optional(), key: z.string().max(128).optional(), movedFrom: movedFrom.optional() })
        .strict(),
      handler: async ({ indexId, n, trainAsync, key, movedFrom }, ctx) => {
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
        // fp16 is widened natively into a new array; f32 vectors stay in this request's
        // receive buffer, kept past the reply until FAISS has them (no copy).
        const vectors = raw instanceof Uint16Array ? await fp16ToFp32Async(raw) : raw;
        toMatrix(vectors, cfg.dim, 'vectors'); // NaN / Infinity check
        const release = raw instanceof Float32Array ? ctx.retainAttachments() : undefined;
        const first = await server.addBatch(indexId, vectors, blob.slice(), offsets.slice(), { trainAsync: trainAsync ?? true, key, release, movedFrom });
        const { state, info } = server.getShard(indexId);
        // firstId -1: the client revoked this key (it stored the batch elsewhere); nothing stored.
        // buffered lets the client start a shared training once the cluster holds trainNum vectors.
        return { result: first < 0 ? { firstId: -1, revoked: true, state } : { firstId: first, state, buffered: info.buffered } };
      },
    }),

    /**
     * The client stored batch `key` on another server after this one failed while holding
     * it: hide it here if it was stored, refuse it if it arrives later. Idempotent.
     */
    revokeBatch: defineMethod({
      schema: z.object({ indexId, key: z.string().min(1).max(128) }).strict(),
      handler: async ({ indexId, key }) => ({ result: await server.withShard(indexId, (d) => d.revoke(key)) }),
    }),

    /** The revocations this shard holds for other servers (batches moved here): [rank, key] pairs to deliver with revokeBatch. */
    heldRevocations: defineMethod({
      schema: byIndex,
      handler: ({ indexId }) => ({ result: server.getDurable(indexId).heldRevocations() }),
    }),

    /** A client delivered (revokeBatch answered) these held revocations: this shard forgets them. Idempotent. */
    revocationsDelivered: defineMethod({
      schema: z.object({ indexId, pairs: movedFrom }).strict(),
      handler: async ({ indexId, pairs }) => ({ result: { forgotten: await server.withShard(indexId, (d) => d.delivered(pairs)) } }),
    }),

    syncTrain: defineMethod({
      schema: byIndex,
      handler: async ({ indexId }) => ({ result: { trained: await server.withShard(indexId, (d) => d.shard.syncTrain()) } }),
    }),

    asyncTrain: defineMethod({
      schema: byIndex,
      handler: async ({ indexId }) => {
        await server.withShard(indexId, async (d) => d.shard.asyncTrain());
      },
    }),

    addBufferToIndex: defineMethod({
      schema: byIndex,
      handler: async ({ indexId }) => {
        await server.withShard(indexId, (d) => d.shard.addBufferToIndex());
      },
    }),

    /** Shared training, step 1 — attachments out: up to `count` rows sampled from this shard's buffer (f32). */
    sampleVectors: defineMethod({
      schema: z.object({ indexId, count: z.number().int().min(0).max(1 << 24) }).strict(),
      handler: ({ indexId, count }) => {
        const shard = server.getShard(indexId);
        const sample = shard.sample(count);
        return { result: { n: sample.length / shard.cfg.dim }, attachments: [sample] };
      },
    }),

    /**
     * Shared training, step 2, on one server — attachments in: the training sample (f32,
     * may be empty: then this shard's own buffer). out: the trained centroids (f32, nlist x dim).
     */
    trainShared: defineMethod({
      schema: byIndex,
      handler: ({ indexId }, ctx) =>
        server.withShard(indexId, async (durable) => {
          const [sample] = ctx.attachments;
          if (ctx.attachments.length > 1 || (sample !== undefined && !(sample instanceof Float32Array))) {
            throw new ValidationError('sample', 'at most one f32 attachment (the training vectors)', sample);
          }
          // The sample is used in place, and its receive buffer is freed as soon as the
          // training is done, before this shard starts adding its own buffer.
          const rows = sample && sample.length > 0 ? toMatrix(sample, durable.cfg.dim, 'sample').data : new Float32Array(0);
          const release = ctx.retainAttachments();
          try {
            const centroids = await durable.trainShared(rows, { threads: server.trainThreads, sampleDone: release });
            return { result: { nlist: centroids.length / durable.cfg.dim, dim: durable.cfg.dim }, attachments: [centroids] };
          } finally {
            release();
          }
        }),
    }),

    /** Shared training, step 3, on every other server — attachments in: the centroids (f32, nlist x dim). */
    installTrained: defineMethod({
      schema: byIndex,
      handler: async ({ indexId }, ctx) => {
        const [centroids] = ctx.attachments;
        if (!(centroids instanceof Float32Array) || ctx.attachments.length !== 1) {
          throw new ValidationError('centroids', 'one f32 attachment: nlist x dim centroids from trainShared', centroids);
        }
        return { result: { installed: await server.withShard(indexId, (d) => d.installTrained(centroids.slice())) } };
      },
    }),

    getState: defineMethod({
      schema: byIndex,
      handler: ({ indexId }) => ({ result: server.getShard(indexId).state }),
    }),

    /** ntotal of one index; 0 for an index this server does not have (as the original). */
    getNtotal: defineMethod({
      schema: byIndex,
      handler: ({ indexId }) => ({ result: server.findShard(indexId)?.info.ntotal ?? 0 }),
    }),

    getInfo: defineMethod({
      schema: byIndex,
      handler: ({ indexId }) => {
        const durable = server.getDurable(indexId);
        const { shard } = durable;
        return { result: { ...shard.info, heldRevocations: durable.heldRevocations().length, error: shard.error?.message ?? null } };
      },
    }),

    /** Distinct metadata[customMetaIdIdx] values (the whole value when metadata is not an array). */
    getIds: defineMethod({
      schema: byIndex,
      handler: ({ indexId }) => {
        const shard = server.getShard(indexId);
        const idx = shard.cfg.customMetaIdIdx;
        const ids = new Set<unknown>();
        for (let i = 0; i < shard.metadata.size; i++) {
          if (shard.isTombstoned(i)) continue;
          const m = decodeMetadataItem(shard.metadata.get(i));
          ids.add(Array.isArray(m) ? m[idx] : m);
        }
        return { result: [...ids] };
      },
    }),

    getCentroids: defineMethod({
      schema: byIndex,
      handler: async ({ indexId }) => {
        const c = await server.getShard(indexId).centroids();
        return { result: { nlist: c.nlist, dim: c.dim }, attachments: [c.data] };
      },
    }),

    setSearchParameter: defineMethod({
      schema: z.object({ indexId, name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/), value: z.number().finite() }).strict(),
      handler: async ({ indexId, name, value }) => {
        await server.withShard(indexId, (d) => d.shard.setParameter(name, value));
      },
    }),

    setOmpNumThreads: defineMethod({
      schema: z.object({ threads: z.number().int().min(1).max(1024) }).strict(),
      handler: ({ threads }) => {
        server.setThreads(threads);
      },
    }),

    saveIndex: defineMethod({
      schema: byIndex,
      handler: async ({ indexId }) => {
        await server.saveIndex(indexId);
      },
    }),

    loadIndex: defineMethod({
      schema: z.object({ indexId, cfg: cfgObject.nullable().optional(), forceReload: z.boolean().optional() }).strict(),
      handler: async ({ indexId, cfg, forceReload }) => ({
        result: await server.loadIndex(indexId, cfg ? parseIndexCfg(cfg) : null, forceReload ?? false),
      }),
    }),

    dropIndex: defineMethod({
      schema: byIndex,
      handler: async ({ indexId }) => {
        await server.dropIndex(indexId);
      },
    }),

    /** Every index on this server with its state and counts, plus process memory. */
    status: defineMethod({
      schema: z.object({}).strict().optional(),
      handler: () => {
        const indexes: Record<string, unknown> = {};
        for (const id of server.indexIds()) {
          const durable = server.getDurable(id);
          indexes[id] = { ...durable.shard.info, heldRevocations: durable.heldRevocations().length };
        }
        const mem = process.memoryUsage();
        return { result: { rank: server.rank, threads: server.threadCount, rssBytes: mem.rss, heapBytes: mem.heapUsed, indexes, ...server.statusExtras() } };
      },
    }),

    /**
     * attachments in: queries (f32, n*dim). out: distances (f32 n*k), labels (i64 n*k, this
     * shard's ids, -1 = none), metadata blob + offsets (u8, n*k entries, empty for -1), and
     * the hits' vectors (f32 n*k*dim) when returnEmbeddings.
     */
    search: defineMethod({
      schema: z.object({ indexId, k: z.number().int().min(1).max(MAX_K), returnEmbeddings: z.boolean().optional() }).strict(),
      attachments: ['f32'],
      handler: async ({ indexId, k, returnEmbeddings }, ctx) => {
        const durable = server.getDurable(indexId);
        const { shard } = durable;
        const queries = ctx.attachments[0] as Float32Array;
        toMatrix(queries, shard.cfg.dim, 'queries');
        const r = await shard.search(queries, k, returnEmbeddings ?? false);
        const { blob, offsets } = hitMetadata(shard.metadata, r.labels);
        const attachments: Attachment[] = [r.distances, r.labels, blob, offsetsBytes(offsets)];
        if (r.vectors) attachments.push(r.vectors);
        // state: a client that sees an untrained shard of a shared-training index checks
        // whether a training is left to finish (its client may be gone).
        // held: revocations this shard holds for other servers; a client that does not know
        // them all yet fetches them (heldRevocations) before trusting the other shards' hits.
        const held = durable.heldRevocations().length;
        return { result: { n: r.n, k, metric: shard.cfg.metric, ntotal: shard.info.ntotal, state: shard.state, held }, attachments };
      },
    }),
  };
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
