/**
 * IndexClient's operations on records with ids: storing them (addIndexData with ids,
 * upsert), delete, get and iterate. Arguments are checked before anything is sent; the
 * per-server steps are in records.ts, and each server is read after its pending revocations.
 */
import { ValidationError } from '../errors.js';
import type { VectorsInput } from '../vectors.js';
import type { ArgsOf } from '../contract.js';
import { checkFilter } from '../filter/schema.js';
import type { ShardOperation } from '../shard-operation.js';
import type { AddSlots } from './add-slots.js';
import type { DeleteSelector, GetOptions, IterateOptions } from './api.js';
import { untilAborted, type CallControl } from './call-control.js';
import type { Connections } from './connections.js';
import type { IndexMeta } from './index-meta.js';
import { batchMatrix, checkIdMode, placeRecords, type BusyPolicy } from './placement.js';
import * as rec from './records.js';
import type { DeleteResult, GetResult, IteratePage, RecordId } from './records.js';
import type { Revocations } from './revocations.js';
import type { TrainingTrigger } from './training-trigger.js';

export class RecordOps {
  private readonly servers: readonly ShardOperation[];

  constructor(
    private readonly conns: Connections,
    private readonly revocations: Revocations,
    private readonly slots: AddSlots,
    private readonly busy: BusyPolicy,
    private readonly training: TrainingTrigger,
    /** The client's meta of an index (known, else asked from the servers). */
    private readonly indexMeta: (indexId: string, control: CallControl) => Promise<IndexMeta>,
  ) {
    this.servers = conns.servers;
  }

  /** Stores records with ids: each on its home server, in parallel; upsert replaces older versions. */
  async put(indexId: string, ids: readonly RecordId[], vectors: VectorsInput | Uint16Array, metadata: readonly unknown[] | null | undefined, upsert: boolean, trainAsync: boolean, control: CallControl): Promise<void> {
    const meta = await this.indexMeta(indexId, control);
    const { data, n } = batchMatrix(vectors, meta.dim);
    const list = rec.checkBatchIds(ids, n);
    await checkIdMode(this.conns, indexId, meta, true, control);
    const trainings = await placeRecords(
      this.servers,
      this.slots,
      { indexId, dim: meta.dim, data, n, ids: list, metadata, upsert, trainAsync },
      (i, reply) => this.training.afterAdd(indexId, meta, i, reply),
      control,
      this.busy,
    );
    if (!trainAsync) await untilAborted(Promise.all(trainings.map((t) => t ?? Promise.resolve())), control.signal);
  }

  /** IndexClient.delete: by ids, or by a declarative filter. */
  async delete(indexId: string, selector: DeleteSelector, control: CallControl): Promise<DeleteResult> {
    if (!Array.isArray(selector)) {
      if (selector && typeof selector === 'object' && 'filter' in selector) {
        const filter = checkFilter(selector.filter);
        await this.indexMeta(indexId, control);
        return rec.deleteByFilter(this.recordCall(indexId, control), this.servers.length, indexId, filter);
      }
      throw new ValidationError('ids', 'an array of record ids', selector);
    }
    const ids = rec.checkIdList(selector);
    await this.indexMeta(indexId, control);
    return rec.deleteEverywhere(this.recordCall(indexId, control), this.servers.length, indexId, ids);
  }

  /** IndexClient.get. */
  async get(indexId: string, ids: readonly RecordId[], opts: GetOptions, control: CallControl): Promise<GetResult> {
    const list = rec.checkIdList(ids);
    const meta = await this.indexMeta(indexId, control);
    return rec.getEverywhere(this.recordCall(indexId, control), this.servers.length, indexId, list, opts.returnEmbeddings ?? false, meta.dim);
  }

  /** IndexClient.iterate. */
  async *iterate(indexId: string, opts: IterateOptions, control: CallControl): AsyncGenerator<IteratePage> {
    const batchSize = opts.batchSize ?? 1000;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 65536) throw new ValidationError('batchSize', 'an integer from 1 to 65536', batchSize);
    const c = opts.cursor;
    if (c != null && (!Number.isSafeInteger(c.server) || c.server < 0 || !Number.isSafeInteger(c.after) || c.after < 0)) {
      throw new ValidationError('cursor', 'a cursor returned by iterate ({ server, after })', c);
    }
    const filter = opts.filter === undefined ? undefined : checkFilter(opts.filter);
    const meta = await this.indexMeta(indexId, control);
    yield* rec.iterateEverywhere(this.recordCall(indexId, control), this.servers.length, indexId, { batchSize, returnEmbeddings: opts.returnEmbeddings ?? true, cursor: c ?? null, dim: meta.dim, filter });
  }

  private recordCall(indexId: string, control: CallControl) {
    return async <M extends 'deleteRecords' | 'getRecords' | 'iterateRecords'>(i: number, method: M, args: ArgsOf<M>) => {
      this.conns.checkOpen();
      await untilAborted(this.revocations.readyToRead(i, indexId), control.signal);
      return this.servers[i]!.call<M>(method === 'deleteRecords' ? 'bulk' : 'query', method, args, [], control);
    };
  }
}
