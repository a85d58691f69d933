/**
 * Client side of records with ids (issue 16). Pure code: no native addon.
 *
 * Placement: a record with an id lives on one server, its home: rank fnv1a32(key) mod the
 * number of servers, where key is 'i:' + decimal for integer ids and 's:' + the string for
 * string ids (docs/protocol.md). Every client computes the same home, so an upsert always
 * lands where the old version is, and the server replaces it in one WAL record: a record
 * is never on two servers, and a client that dies half-way through an upsert leaves each
 * record either old or new. Reads and deletes still ask every server (no map is needed,
 * and a record restored on another rank is still found).
 */
import { ConnectionError, ServerUnavailableError, TimeoutError, ValidationError } from '../errors.js';
import type { ArgsOf } from '../contract.js';
import type { Attachment } from '../protocol/index.js';
import { encodeMetadata, metadataReader, offsetsBytes, offsetsView } from '../protocol/metadata.js';
import { checkRecordIds, homeOf, type RecordId } from '../shard/records.js';
import type { Filter } from '../filter/schema.js';
import type { Metric } from '../vectors.js';
import type { Reply, ShardOperation } from '../shard-operation.js';

export type { RecordId } from '../shard/records.js';
export { fnv1a32, homeOf } from '../shard/records.js';

/** Ids per deleteRecords/getRecords call (the server's limit is higher). */
const IDS_PER_CALL = 65536;

/** One stored record, as get() and iterate() return it. */
export interface StoredRecord<M = unknown> {
  id: RecordId | null;
  metadata: M;
  /** With returnEmbeddings: the stored vector (normalised for 'cosine'; approximate for lossy index types). */
  embedding?: Float32Array;
}

export interface GetResult<M = unknown> {
  /** The records found, in the order asked (each id once). */
  records: Array<StoredRecord<M>>;
  /** Ids no server holds (reported, not an error). */
  unknown: RecordId[];
}

export interface DeleteResult {
  /** Records deleted. */
  deleted: number;
  /** Ids no server held. */
  unknown: RecordId[];
}

/** Where an iteration stands: resume with iterate(indexId, { cursor }). */
export interface IterateCursor {
  /** Position of the server in the client's server list (rank order). */
  server: number;
  /** Internal id on that server to continue from. */
  after: number;
}

export interface IteratePage<M = unknown> {
  records: Array<StoredRecord<M>>;
  /** Pass it back to resume after this page; null after the last page. */
  cursor: IterateCursor | null;
}

export interface RangeSearchResults<M = unknown> {
  /** Per query, every hit within the radius, best first. */
  scores: number[][];
  metadata: M[][];
  ids: Array<Array<RecordId | null>>;
}

/** Splits a batch by home server: for each server position, the row numbers that go there. */
export function splitByHome(ids: readonly RecordId[], servers: readonly ShardOperation[]): Map<number, number[]> {
  const byRank = rankPositions(servers);
  const out = new Map<number, number[]>();
  ids.forEach((id, row) => {
    const pos = byRank[homeOf(id, servers.length)]!;
    let rows = out.get(pos);
    if (!rows) out.set(pos, (rows = []));
    rows.push(row);
  });
  return out;
}

/** Server position of each rank (servers report their rank; the list order otherwise). */
function rankPositions(servers: readonly ShardOperation[]): number[] {
  const pos = servers.map((_, i) => i);
  const ranks = servers.map((s) => s.rank);
  if (ranks.every((r) => r !== undefined && r >= 0 && r < servers.length) && new Set(ranks).size === servers.length) {
    ranks.forEach((r, i) => (pos[r!] = i));
  }
  return pos;
}

/** Rows `rows` of a row-major matrix (vectors or float16) as a new array. */
export function pickRows<T extends Float32Array | Uint16Array>(data: T, dim: number, rows: readonly number[]): T {
  const out = new (data.constructor as { new (n: number): T })(rows.length * dim);
  rows.forEach((r, i) => out.set(data.subarray(r * dim, (r + 1) * dim), i * dim));
  return out;
}

/** Checks the ids of a batch of n vectors: one per vector, strings or safe integers, no duplicates. */
export function checkBatchIds(ids: unknown, n: number): RecordId[] {
  return checkRecordIds(ids, 'ids', { unique: true, n });
}

/** Checks the ids of a get/delete. */
export function checkIdList(ids: unknown): RecordId[] {
  const list = checkRecordIds(ids, 'ids', { unique: false });
  if (list.length === 0) throw new ValidationError('ids', 'at least one record id', 'an empty array');
  return list;
}

type Call = <M extends 'deleteRecords' | 'getRecords' | 'iterateRecords'>(server: number, method: M, args: ArgsOf<M>) => Promise<Reply<M>>;

/** How sendByHome reaches a server: `send` stores one part there (addIndexData) and returns what the caller tracks (e.g. a training). */
export interface HomeSender<T> {
  servers: readonly ShardOperation[];
  send: (server: number, args: { n: number; ids: RecordId[]; servers: number; upsert?: true }, attachments: Attachment[]) => Promise<T>;
}

/**
 * Stores a batch of records, each part on its home server, in parallel. A part whose server
 * fails is not moved elsewhere (the record would then live on two servers): the call fails
 * with a ServerUnavailableError naming those servers once the other parts are stored.
 */
export async function sendByHome<T>(
  to: HomeSender<T>,
  batch: { data: Float32Array | Uint16Array; dim: number; n: number; ids: RecordId[]; metadata: readonly unknown[] | null | undefined; upsert: boolean },
): Promise<T[]> {
  const { data, dim, n, ids, metadata } = batch;
  // null means no metadata, as in addIndexData without ids.
  if (metadata !== undefined && metadata !== null && (!Array.isArray(metadata) || metadata.length !== n)) {
    throw new ValidationError('metadata', `an array with one entry per vector (${n})`, Array.isArray(metadata) ? `${metadata.length} entries` : metadata);
  }
  const results: T[] = [];
  const failures: string[] = [];
  const failed: string[] = [];
  await Promise.all(
    [...splitByHome(ids, to.servers)].map(async ([i, rows]) => {
      const whole = rows.length === n;
      const part = whole ? data : pickRows(data, dim, rows);
      const { blob, offsets } = encodeMetadata(metadata && (whole ? metadata : rows.map((r) => metadata[r])), rows.length);
      const args = { n: rows.length, ids: whole ? ids : rows.map((r) => ids[r]!), servers: to.servers.length, ...(batch.upsert ? { upsert: true as const } : {}) };
      try {
        results.push(await to.send(i, args, [part, blob, offsetsBytes(offsets)]));
      } catch (err) {
        if (!(err instanceof ConnectionError || err instanceof TimeoutError)) throw err;
        failed.push(to.servers[i]!.name);
        failures.push(`${to.servers[i]!.name}: ${err.message}`);
      }
    }),
  );
  if (failures.length > 0) {
    throw new ServerUnavailableError(
      failed.join(', '),
      `records with ids live on their home server, which failed: ${failures.join('; ')}. Records for other servers were stored; ` +
        'those for the failed server may or may not be: retry with upsert (it is idempotent) once the server is back',
    );
  }
  return results;
}

/** Deletes ids on every server (all must answer: any of them may hold one). */
export async function deleteEverywhere(call: Call, servers: number, indexId: string, ids: RecordId[]): Promise<DeleteResult> {
  let deleted = 0;
  const unique = [...new Set(ids)];
  const unknownCount = new Map<RecordId, number>();
  for (let off = 0; off < unique.length; off += IDS_PER_CALL) {
    const chunk = unique.slice(off, off + IDS_PER_CALL);
    const replies = await Promise.all(
      Array.from({ length: servers }, (_, i) => call(i, 'deleteRecords', { indexId, ids: chunk })),
    );
    for (const r of replies) {
      deleted += r.result.deleted;
      for (const id of r.result.unknown) unknownCount.set(id, (unknownCount.get(id) ?? 0) + 1);
    }
  }
  return { deleted, unknown: unique.filter((id) => unknownCount.get(id) === servers) };
}

/** Deletes, on every server, the records a filter admits there (all must answer); returns how many. */
export async function deleteByFilter(call: Call, servers: number, indexId: string, filter: Filter): Promise<DeleteResult> {
  const replies = await Promise.all(Array.from({ length: servers }, (_, i) => call(i, 'deleteRecords', { indexId, filter })));
  return { deleted: replies.reduce((s, r) => s + r.result.deleted, 0), unknown: [] };
}

/** Records by id from every server, in the order asked. */
export async function getEverywhere(call: Call, servers: number, indexId: string, ids: RecordId[], returnEmbeddings: boolean, dim: number): Promise<GetResult> {
  const found = new Map<RecordId, StoredRecord>();
  const unique = [...new Set(ids)];
  // With vectors, a reply carries at most 32 MiB of them (the frame limit is far above).
  const perCall = returnEmbeddings ? Math.max(1, Math.min(IDS_PER_CALL, Math.floor((1 << 23) / dim))) : IDS_PER_CALL;
  for (let off = 0; off < unique.length; off += perCall) {
    const chunk = unique.slice(off, off + perCall);
    const replies = await Promise.all(Array.from({ length: servers }, (_, i) => call(i, 'getRecords', { indexId, ids: chunk, returnEmbeddings })));
    for (const r of replies) for (const rec of decodeRecords(r, returnEmbeddings, dim)) if (!found.has(rec.id!)) found.set(rec.id!, rec);
  }
  return { records: unique.filter((id) => found.has(id)).map((id) => found.get(id)!), unknown: unique.filter((id) => !found.has(id)) };
}

/** getRecords / iterateRecords reply -> records. */
export function decodeRecords(r: Reply<'getRecords'> | Reply<'iterateRecords'>, returnEmbeddings: boolean, dim: number): StoredRecord[] {
  const [blob, offBytes, vectors] = r.attachments;
  const read = metadataReader(blob, offsetsView(offBytes));
  return r.result.ids.map((id, i) => ({
    id,
    metadata: read(i),
    ...(returnEmbeddings && vectors ? { embedding: vectors.slice(i * dim, (i + 1) * dim) } : {}),
  }));
}

/** Merges per-server range search replies per query, best first for the metric. */
export function mergeRange(replies: ReadonlyArray<Reply<'rangeSearch'>>, n: number, metric: Metric): RangeSearchResults {
  const out: RangeSearchResults = { scores: [], metadata: [], ids: [] };
  const shards = replies.map((r) => {
    const [lims, distances, , blob, offBytes, idBlob, idOff] = r.attachments;
    return { lims, distances, meta: metadataReader(blob, offsetsView(offBytes)), ids: metadataReader(idBlob, offsetsView(idOff)) };
  });
  const sign = metric === 'l2' ? 1 : -1;
  for (let q = 0; q < n; q++) {
    const hits: Array<{ s: number; p: number; d: number }> = [];
    shards.forEach((sh, s) => {
      for (let p = Number(sh.lims[q]); p < Number(sh.lims[q + 1]); p++) hits.push({ s, p, d: sh.distances[p]! });
    });
    hits.sort((a, b) => sign * (a.d - b.d) || a.s - b.s || a.p - b.p);
    out.scores.push(hits.map((h) => h.d));
    out.metadata.push(hits.map((h) => shards[h.s]!.meta(h.p)));
    out.ids.push(hits.map((h) => (shards[h.s]!.ids(h.p) ?? null) as RecordId | null));
  }
  return out;
}

/** An async iterator over every live record, server by server, in pages; resumable from a cursor. */
export async function* iterateEverywhere(
  call: Call,
  servers: number,
  indexId: string,
  opts: { batchSize: number; returnEmbeddings: boolean; cursor: IterateCursor | null; dim: number; filter?: Filter },
): AsyncGenerator<IteratePage> {
  let { server, after } = opts.cursor ?? { server: 0, after: 0 };
  while (server < servers) {
    const r = await call(server, 'iterateRecords', { indexId, after, limit: opts.batchSize, returnEmbeddings: opts.returnEmbeddings, ...(opts.filter ? { filter: opts.filter } : {}) });
    const records = decodeRecords(r, opts.returnEmbeddings, opts.dim);
    if (r.result.next === null) {
      server++;
      after = 0;
    } else {
      after = r.result.next;
    }
    const cursor = server < servers ? { server, after } : null;
    if (records.length > 0 || cursor === null) yield { records, cursor };
  }
}
