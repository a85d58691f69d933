/**
 * A typed handle on one index, `client.index<M>(id)`: the IndexClient's calls with the index
 * bound, and M, the caller's metadata type, on what goes in (add, upsert, filters) and what
 * comes back (search, get, iterate, rangeSearch). M is the caller's word, not checked on the
 * wire: metadata is whatever was stored (null for vectors added without any).
 */
import type { IndexCfg } from '../config/index-cfg.js';
import type { IndexState } from '../shard/state.js';
import type { VectorsInput } from '../vectors.js';
import type { AddOptions, DeleteSelector, GetOptions, IterateOptions, SearchFilter, SearchOptions, SearchResults } from './api.js';
import type { CallControl } from './call-control.js';
import type { IndexClient } from './index-client.js';
import type { DeleteResult, GetResult, IteratePage, RangeSearchResults, RecordId } from './records.js';

export class IndexHandle<M = unknown> {
  constructor(
    private readonly client: IndexClient,
    readonly id: string,
  ) {}

  /** createIndex on every server. */
  create(cfg: Partial<IndexCfg> | IndexCfg = {}, opts: CallControl = {}): Promise<void> {
    return this.client.createIndex(this.id, cfg, opts);
  }

  /** addIndexData: one batch, placed round-robin (or by home with opts.ids). */
  add(vectors: VectorsInput | Uint16Array, metadata?: readonly M[] | null, opts: AddOptions = {}): Promise<void> {
    return this.client.addIndexData(this.id, vectors, metadata, opts);
  }

  upsert(ids: readonly RecordId[], vectors: VectorsInput | Uint16Array, metadata?: readonly M[], opts: CallControl = {}): Promise<void> {
    return this.client.upsert(this.id, ids, vectors, metadata, opts);
  }

  delete(selector: DeleteSelector, opts: CallControl = {}): Promise<DeleteResult> {
    return this.client.delete(this.id, selector, opts);
  }

  get(ids: readonly RecordId[], opts: GetOptions = {}): Promise<GetResult<M>> {
    return this.client.get(this.id, ids, opts) as Promise<GetResult<M>>;
  }

  iterate(opts: IterateOptions = {}): AsyncGenerator<IteratePage<M>> {
    return this.client.iterate(this.id, opts) as AsyncGenerator<IteratePage<M>>;
  }

  search(queries: VectorsInput, k: number, opts: SearchOptions = {}): Promise<SearchResults<M>> {
    return this.client.search(this.id, queries, k, opts) as Promise<SearchResults<M>>;
  }

  searchWithFilter(queries: VectorsInput, k: number, filter: SearchFilter<M>, opts: SearchOptions = {}): Promise<SearchResults<M>> {
    return this.client.searchWithFilter(this.id, queries, k, filter as SearchFilter, opts) as Promise<SearchResults<M>>;
  }

  rangeSearch(queries: VectorsInput, radius: number, opts: CallControl = {}): Promise<RangeSearchResults<M>> {
    return this.client.rangeSearch(this.id, queries, radius, opts) as Promise<RangeSearchResults<M>>;
  }

  syncTrain(opts: CallControl = {}): Promise<void> {
    return this.client.syncTrain(this.id, opts);
  }

  getState(opts: CallControl = {}): Promise<IndexState> {
    return this.client.getState(this.id, opts);
  }

  getNtotal(opts: CallControl = {}): Promise<number> {
    return this.client.getNtotal(this.id, opts);
  }

  addBufferToIndex(opts: CallControl = {}): Promise<void> {
    return this.client.addBufferToIndex(this.id, opts);
  }

  setSearchParameter(name: string, value: number, opts: CallControl = {}): Promise<void> {
    return this.client.setSearchParameter(this.id, name, value, opts);
  }

  compact(opts: CallControl = {}): Promise<number> {
    return this.client.compact(this.id, opts);
  }

  save(opts: CallControl = {}): Promise<void> {
    return this.client.saveIndex(this.id, opts);
  }

  load(cfg?: Partial<IndexCfg> | null, forceReload = true, opts: CallControl = {}): Promise<void> {
    return this.client.loadIndex(this.id, cfg, forceReload, opts);
  }

  drop(opts: CallControl = {}): Promise<void> {
    return this.client.dropIndex(this.id, opts);
  }
}
