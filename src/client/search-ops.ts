/**
 * IndexClient's searches: search (each server's top-k, heap-merged), searchWithFilter (the
 * client-side filter loop over it) and rangeSearch. Each server is read after its pending
 * revocations; a search probes once for every server when that pays (quantize-once.ts).
 */
import { checkCallSearchParams } from '../config/search-params.js';
import { ValidationError } from '../errors.js';
import { checkK, toMatrix, type VectorsInput } from '../vectors.js';
import { checkFilter, type Filter } from '../filter/schema.js';
import type { ShardOperation } from '../shard-operation.js';
import type { SearchFilter, SearchOptions, SearchResults, SharedQuantize } from './api.js';
import { untilAborted, type CallControl } from './call-control.js';
import { fanOutSearch } from './fan-out.js';
import { filterPredicate, searchFiltered } from './filter.js';
import type { IndexMeta } from './index-meta.js';
import { mergeReplies } from './merge.js';
import { SharedQuantizer } from './quantize-once.js';
import * as rec from './records.js';
import type { RangeSearchResults } from './records.js';
import type { Revocations } from './revocations.js';
import type { TrainingTrigger } from './training-trigger.js';

export class SearchOps {
  private readonly quantizer: SharedQuantizer;

  constructor(
    private readonly servers: readonly ShardOperation[],
    private readonly revocations: Revocations,
    private readonly training: TrainingTrigger,
    /** The client's known indexes (an untrained shard checks the one known now). */
    private readonly indexes: ReadonlyMap<string, IndexMeta>,
    sharedQuantize: SharedQuantize,
  ) {
    this.quantizer = new SharedQuantizer(servers, sharedQuantize);
  }

  /** IndexClient.search on an index whose meta the caller has. */
  async search(indexId: string, meta: IndexMeta, queries: VectorsInput, k: number, opts: SearchOptions, control: CallControl): Promise<SearchResults> {
    const { data, n } = toMatrix(queries, meta.dim, 'queries');
    checkK(k);
    const params = this.callParams(meta, opts.params);
    const returnEmbeddings = opts.returnEmbeddings ?? false;
    // A declarative filter runs on the servers (shard/filtered-search.ts): only admitted records are searched.
    const filter = opts.filter === undefined ? undefined : checkFilter(opts.filter);
    const replies = await this.fanOut(indexId, meta, data, k, returnEmbeddings, opts.allowPartial ?? false, params, control, filter);
    const out = mergeReplies(replies.shards, n, k, meta, returnEmbeddings);
    if (opts.allowPartial) out.missing = replies.missing;
    if (filter) out.matches = replies.matches;
    return out;
  }

  /** IndexClient.searchWithFilter: over-fetches until k hits pass the filter or the index is exhausted. */
  async searchWithFilter(indexId: string, meta: IndexMeta, queries: VectorsInput, k: number, filter: SearchFilter, opts: SearchOptions, control: CallControl): Promise<SearchResults> {
    const { data, n } = toMatrix(queries, meta.dim, 'queries');
    checkK(k);
    const keep = filterPredicate(filter);
    const params = this.callParams(meta, opts.params);
    const returnEmbeddings = opts.returnEmbeddings ?? false;
    const allowPartial = opts.allowPartial ?? false;
    return searchFiltered(n, k, keep, { returnEmbeddings, allowPartial }, async (fetchK) => {
      const replies = await this.fanOut(indexId, meta, data, fetchK, returnEmbeddings, allowPartial, params, control);
      return { merged: mergeReplies(replies.shards, n, fetchK, meta, returnEmbeddings), ntotal: replies.ntotal, missing: replies.missing };
    });
  }

  /** IndexClient.rangeSearch: every server's hits within `radius`, merged per query. */
  async rangeSearch(indexId: string, meta: IndexMeta, queries: VectorsInput, radius: number, control: CallControl): Promise<RangeSearchResults> {
    const { data, n } = toMatrix(queries, meta.dim, 'queries');
    if (typeof radius !== 'number' || !Number.isFinite(radius)) throw new ValidationError('radius', 'a finite number', radius);
    const replies = await Promise.all(
      this.servers.map(async (s, i) => {
        await untilAborted(this.revocations.readyToRead(i, indexId), control.signal);
        return s.call('query', 'rangeSearch', { indexId, radius }, [data], control);
      }),
    );
    return rec.mergeRange(replies, n, replies[0]?.result.metric ?? meta.metric);
  }

  /** The fan-out search; an untrained shard of a shared-training index makes this client check for a training left to finish. */
  private async fanOut(indexId: string, meta: IndexMeta, queries: Float32Array, k: number, returnEmbeddings: boolean, allowPartial: boolean, params: Record<string, number> | undefined, control: CallControl, filter?: Filter) {
    // Filtered searches probe on each shard (the filter may widen nprobe there).
    const probes = returnEmbeddings || filter ? null : await this.quantizer.probes(indexId, queries, meta.dim, params, control);
    const replies = await fanOutSearch(this.servers, this.revocations, {
      indexId,
      queries,
      k,
      returnEmbeddings,
      allowPartial,
      ...(params ? { params } : {}),
      ...(filter ? { filter } : {}),
      probes,
      control,
      onUntrained: () => {
        const known = this.indexes.get(indexId);
        if (known) this.training.check(indexId, known);
      },
    });
    if (replies.untrained) this.training.check(indexId, meta);
    return replies;
  }

  /** Per-call search parameters, checked for the index type before anything is sent (the servers check again). */
  private callParams(meta: IndexMeta, params: Record<string, number> | undefined): Record<string, number> | undefined {
    if (params === undefined) return undefined;
    if (meta.type) checkCallSearchParams(meta.type, params);
    else if (typeof params !== 'object' || params === null) throw new ValidationError('params', 'an object of search parameters, e.g. { nprobe: 32 }', params);
    return Object.keys(params).length > 0 ? params : undefined;
  }
}
