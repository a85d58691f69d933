/**
 * The RPC contract between dfaiss clients and index servers: per method, its argument
 * schema (zod, validated by the server before the handler runs), the attachments it takes,
 * its result type and the attachments it returns. The server implements exactly this table
 * (server/methods.ts, through `implement`), the client calls it through typed stubs
 * (ServerConn.rpc), and a test checks docs/protocol.md against it. Pure: no server code.
 */
import { z } from 'zod';
import type { IndexTypeCfg } from './config/search-params.js';
import { filterSchema } from './filter/schema.js';
import { MAX_ID_LENGTH, type RecordId } from './shard/records.js';
import type { IndexState } from './shard/state.js';
import { MAX_K, type Metric } from './vectors.js';

import type { AttachmentRule } from './protocol/rpc-methods.js';

const indexId = z.string().min(1).max(128);
const cfgObject = z.record(z.string(), z.unknown());
const byIndex = z.object({ indexId }).strict();
const rowCount = z.number().int().min(0).max(1 << 24);
const key = z.string().min(1).max(128);
/** [rank, idempotency key] of batch attempts on servers that failed while holding them. */
const rankKeyPairs = z.array(z.tuple([z.number().int().min(0).max(1_000_000), key])).max(1024);
const recordId = z.union([z.string().min(1).max(MAX_ID_LENGTH), z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER)]);
const searchParams = z.record(z.string().max(64), z.number());
/** At most this many ids per delete/get call (the client splits larger lists). */
export const MAX_IDS_PER_CALL = 1 << 20;
export const recordIds = z.array(recordId).max(MAX_IDS_PER_CALL);
/** Records per iterateRecords page at most. */
export const MAX_PAGE = 65536;

/** A shard's getInfo reply, and each index's entry of status. */
export interface ShardInfoReply {
  state: IndexState;
  dim: number;
  metric: Metric;
  /** Searchable vectors (tombstoned ones excluded). */
  ntotal: number;
  /** Vectors waiting for training or indexing. */
  buffered: number;
  /** Live vectors received: ntotal + buffered. */
  total: number;
  tombstoned: number;
  sharedTraining: boolean;
  trainNum: number;
  trainRatio: number;
  /** Bytes of the buffered vectors (float16 kept as float16) and of a training sample held here: what the server's --max-buffered-mb bound counts. */
  bufferedBytes?: number;
  sampleBytes?: number;
  /** Revocations this shard holds for other servers (see client/revocations.ts). */
  heldRevocations?: number;
  /** The shard stores records with ids (true), vectors without (false), or nothing yet (null). */
  withIds?: boolean | null;
  /** Records with ids: live records (null without ids), dead internal ids, dead vectors still in FAISS, vectors FAISS holds. */
  records?: number | null;
  deleted?: number;
  awaitingCompaction?: number;
  faissNtotal?: number;
  compactions?: { count: number; removed: number; ms: number; lastMs: number };
  /** The index type (so a client can check search parameters before sending them). */
  indexBuilderType?: IndexTypeCfg['indexBuilderType'];
  faissFactory?: IndexTypeCfg['faissFactory'];
  centroids?: number;
  inferCentroids?: boolean;
  error?: string | null;
}

export interface StatusReply {
  rank: number;
  threads: number;
  rssBytes: number;
  heapBytes: number;
  indexes: Record<string, ShardInfoReply>;
  [extra: string]: unknown;
}

export interface SearchReply {
  n: number;
  k: number;
  metric: Metric;
  ntotal: number;
  state?: IndexState;
  /** Revocations this shard holds for other servers. */
  held?: number;
  /** Records with ids: each hit's id travels packed like metadata as the last two attachments. */
  ids?: boolean;
  /** With a filter: the records it admitted on this shard, and how the shard searched them. */
  filtered?: { matches: number; strategy: 'exact' | 'selector'; widenings: number; exactFallback: number };
  /** The request's probe lists were used (its quantizer fingerprint is this shard's). */
  preassigned?: boolean;
}

interface MethodContract<A extends z.ZodType, R, Out extends readonly unknown[]> {
  readonly args: A;
  /** Attachments the request must carry (checked before the handler runs), if fixed. */
  readonly attachmentsIn?: AttachmentRule;
  /** Type-level only: the result and the attachments of the reply. */
  readonly result?: R;
  readonly attachmentsOut?: Out;
}

/** Declares one method: `method<Result, OutAttachments>()(argsSchema, attachmentsIn?)`. */
function method<R = void, Out extends readonly unknown[] = []>() {
  return <A extends z.ZodType>(args: A, attachmentsIn?: AttachmentRule): MethodContract<A, R, Out> => ({ args, ...(attachmentsIn ? { attachmentsIn } : {}) });
}

export const CONTRACT = {
  createIndex: method<{ created: boolean; sharedTraining: boolean }>()(z.object({ indexId, cfg: cfgObject }).strict()),
  /** in: vectors (f32 or f16), metadata blob (u8), metadata offsets (u8: n+1 LE u32); checked by the handler. */
  addIndexData: method<{ firstId: number; state: IndexState; buffered?: number; revoked?: boolean }>()(
    z
      .object({
        indexId,
        n: z.number().int().positive(),
        trainAsync: z.boolean().optional(),
        key: z.string().max(128).optional(),
        movedFrom: rankKeyPairs.optional(),
        // Records with ids (issue 16): one id per vector; upsert replaces stored records with those ids.
        ids: recordIds.optional(),
        upsert: z.boolean().optional(),
        // With ids: the sender's number of servers; every id must have this server as its home.
        servers: z.number().int().min(1).max(1_000_000).optional(),
      })
      .strict(),
  ),
  revokeBatch: method<{ outcome: 'tombstoned' | 'blocked' | 'already'; count: number }>()(z.object({ indexId, key }).strict()),
  heldRevocations: method<Array<[number, string]>>()(byIndex),
  revocationsDelivered: method<{ forgotten: number }>()(z.object({ indexId, pairs: rankKeyPairs }).strict()),
  syncTrain: method<{ trained: boolean }>()(byIndex),
  asyncTrain: method()(byIndex),
  addBufferToIndex: method()(byIndex),
  sampleVectors: method<{ n: number }, [Float32Array]>()(z.object({ indexId, count: rowCount, offset: rowCount.optional(), of: rowCount.optional() }).strict()),
  stageSample: method()(z.object({ indexId, sampleId: key, offset: rowCount, total: rowCount }).strict(), ['f32']),
  /** in: optional training sample (f32). */
  trainShared: method<{ nlist: number; dim: number; layout: Array<[string, number]> }, [Float32Array]>()(
    z
      .object({ indexId, sampleId: key.optional(), total: rowCount.optional(), own: z.object({ offset: rowCount, count: rowCount, of: rowCount }).strict().optional() })
      .strict(),
  ),
  /** in: the trainer's state (f32; without a layout: coarse centroids, nlist x dim); checked by the handler. */
  installTrained: method<{ installed: boolean }>()(
    z
      .object({
        indexId,
        nlist: z.number().int().min(-1).max(1 << 24).optional(),
        layout: z.array(z.tuple([z.string().min(1).max(64), z.number().int().min(0).max(2 ** 31)])).max(64).optional(),
      })
      .strict(),
  ),
  getState: method<IndexState>()(byIndex),
  getNtotal: method<number>()(byIndex),
  getInfo: method<ShardInfoReply>()(byIndex),
  getIds: method<unknown[]>()(byIndex),
  getCentroids: method<{ nlist: number; dim: number }, [Float32Array]>()(byIndex),
  setSearchParameter: method()(z.object({ indexId, name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/), value: z.number().finite() }).strict()),
  setOmpNumThreads: method()(z.object({ threads: z.number().int().min(1).max(1024) }).strict()),
  saveIndex: method()(byIndex),
  loadIndex: method<{ loaded: boolean }>()(z.object({ indexId, cfg: cfgObject.nullable().optional(), forceReload: z.boolean().optional() }).strict()),
  dropIndex: method()(byIndex),
  status: method<StatusReply>()(z.object({}).strict().optional()),
  /**
   * out: distances (f32 n*k), labels (i64 n*k), metadata blob + offsets (u8), vectors (f32,
   * with returnEmbeddings), record ids blob + offsets (u8, with `ids` in the result).
   */
  search: method<SearchReply, [Float32Array, BigInt64Array, Uint8Array, Uint8Array, ...Array<Float32Array | Uint8Array>]>()(
    z
      .object({
        indexId,
        k: z.number().int().min(1).max(MAX_K),
        returnEmbeddings: z.boolean().optional(),
        params: searchParams.optional(),
        filter: filterSchema.optional(),
        // With probe lists from quantize (attachments 2 and 3): used when this shard's quantizer has that fingerprint.
        probes: z.object({ fingerprint: z.string().min(1).max(64), nprobe: z.number().int().min(1).max(1 << 24) }).strict().optional(),
      })
      .strict(),
    ['f32', 'i64?', 'f32?'],
  ),
  /**
   * in: queries (f32). out: each query's nprobe nearest IVF lists (i64, n x nprobe) and their
   * coarse distances (f32), for a search on every shard whose quantizer has `fingerprint`
   * (null, without attachments: this shard cannot, for `reason`).
   */
  quantize: method<{ fingerprint: string | null; nprobe: number; reason?: string }, [BigInt64Array?, Float32Array?]>()(
    z.object({ indexId, params: searchParams.optional() }).strict(),
    ['f32'],
  ),
  // ---- records with ids (issue 16; server/record-methods.ts) ----
  /**
   * Deletes records by id, or those a filter admits (exactly one of the two; durable before
   * the reply); `unknown`: ids this server does not hold.
   */
  deleteRecords: method<{ deleted: number; unknown: RecordId[] }>()(
    z
      .object({ indexId, ids: recordIds.optional(), filter: filterSchema.optional() })
      .strict()
      .refine((a) => (a.ids === undefined) !== (a.filter === undefined), { message: 'either ids or a filter (exactly one of the two)', path: ['ids'] }),
  ),
  /** out: metadata blob + offsets (u8) of the found ids, in order; their vectors (f32) with returnEmbeddings. */
  getRecords: method<{ ids: Array<RecordId | null>; unknown: RecordId[] }, [Uint8Array, Uint8Array, Float32Array?]>()(
    z.object({ indexId, ids: recordIds, returnEmbeddings: z.boolean().optional() }).strict(),
  ),
  /** One page of live records in internal-id order from `after`; `next` resumes (null: exhausted). out as getRecords. */
  iterateRecords: method<{ ids: Array<RecordId | null>; ats: number[]; next: number | null }, [Uint8Array, Uint8Array, Float32Array?]>()(
    z
      .object({ indexId, after: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), limit: z.number().int().min(1).max(MAX_PAGE), returnEmbeddings: z.boolean().optional(), filter: filterSchema.optional() })
      .strict(),
  ),
  /** in: queries (f32). out: lims (i64, n+1), distances (f32), labels (i64), metadata blob + offsets (u8), record ids blob + offsets (u8). */
  rangeSearch: method<{ n: number; metric: Metric | 'cosine'; held: number }, [BigInt64Array, Float32Array, BigInt64Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array]>()(
    z.object({ indexId, radius: z.number().finite() }).strict(),
    ['f32'],
  ),
  /** Removes deleted vectors from FAISS now (compaction also runs in the background). */
  compact: method<{ removed: number }>()(byIndex),
} as const;

export type Contract = typeof CONTRACT;
export type MethodName = keyof Contract;
/** What a caller passes. */
export type ArgsOf<M extends MethodName> = z.input<Contract[M]['args']>;
/** What a handler receives (after validation and defaults). */
export type ParsedArgsOf<M extends MethodName> = z.output<Contract[M]['args']>;
export type ResultOf<M extends MethodName> = Exclude<Contract[M]['result'], undefined>;
export type AttachmentsOutOf<M extends MethodName> = Exclude<Contract[M]['attachmentsOut'], undefined>;
