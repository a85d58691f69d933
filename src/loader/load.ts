/**
 * Bulk loading, the original's load_data script done properly: the file is streamed in
 * batches through a small pool of reused buffers while several batches are in flight to
 * different servers; float16 stays float16 on the wire; each vector's metadata is its row
 * number, so search hits map back to file rows. After the last batch the index is trained
 * if it has not trained itself, the loader waits until every shard is TRAINED, and saves.
 *
 * Resuming: `resumeRow` is the first row not acknowledged by a server (every row before it
 * is stored), so an interrupted or failed load continues with `start = resumeRow`.
 */
import type { IndexCfg } from '../config/index.js';
import { IndexClient } from '../client/index-client.js';
import { DfaissError, TimeoutError, ValidationError } from '../errors.js';
import { IndexState } from '../shard/state.js';
import type { VectorBuffer, VectorFile } from './vector-file.js';

export interface LoadProgress {
  /** Rows acknowledged by the servers in this run. */
  done: number;
  /** Rows this run loads. */
  total: number;
  elapsedMs: number;
  phase: 'adding' | 'training' | 'saving';
}

/** The options errors and hints name. */
export type LoadOptionName = 'batchSize' | 'start' | 'limit' | 'cfg' | 'loadIndex' | 'append' | 'drop';

export interface LoadOptions {
  /** Connected client used for the adds. */
  client: IndexClient;
  /**
   * Opens a second client for slow cluster-wide calls (training, saving) whose deadline is
   * trainTimeoutMs rather than the add client's call timeout. @default use `client`
   */
  connectSlow?: (callTimeoutMs: number) => Promise<IndexClient>;
  file: VectorFile;
  indexId: string;
  /** Config to create the index with (or to load it with when loadIndex). null with loadIndex: the saved cfg. */
  cfg: IndexCfg | null;
  /** Load the saved index first (servers without a saved shard start empty). @default false */
  loadIndex?: boolean;
  /** Rows per batch (smaller when the whole load is under servers x batchSize). @default 1000 */
  batchSize?: number;
  /** First row. @default 0 */
  start?: number;
  /** Load at most this many rows. @default all remaining */
  limit?: number;
  /** Batches in flight at once. @default 2 x servers */
  inFlight?: number;
  /** Deadline for training and for waiting until TRAINED. @default 24 h */
  trainTimeoutMs?: number;
  /** Save the index at the end. @default true */
  save?: boolean;
  /**
   * Add to an index that already holds vectors (e.g. resuming with `start`). Without it a
   * non-empty index is refused before anything is sent: loading the same file twice would
   * store every row twice. @default false
   */
  append?: boolean;
  /** Stops reading new batches; batches in flight finish and the result says where to resume. */
  signal?: AbortSignal;
  /**
   * Record ids for rows [start, start + count) (issue 16): the rows are stored as records
   * with ids through upsert, so an interrupted load resumed with --start never stores a
   * row twice. @default no ids
   */
  idsForRows?: (start: number, count: number) => Array<string | number>;
  onProgress?: (p: LoadProgress) => void;
  /**
   * What the caller calls these options, for its errors and hints (the CLI: its flags, and
   * `drop` how to drop the index). @default the option names, and dropIndex
   */
  names?: Partial<Record<LoadOptionName, string>>;
}

export interface LoadResult {
  indexId: string;
  /** First row of this run. */
  start: number;
  /** Rows acknowledged in this run. */
  rowsLoaded: number;
  /** The next run's --start: every row before it is stored. */
  resumeRow: number;
  /** Rows of the file. */
  fileRows: number;
  interrupted: boolean;
  /** The loader asked the servers to train (the index had not reached trainNum, or has none). */
  syncTrainCalled: boolean;
  state: IndexState | null;
  ntotal: number | null;
  saved: boolean;
  addSeconds: number;
  /** Training (when needed) and waiting until every shard is TRAINED. */
  trainSeconds: number;
  saveSeconds: number;
  totalSeconds: number;
  /** Rows per second while adding. */
  vectorsPerSecond: number;
}

/** A failed load; `resumeRow` says where to continue once the cause is fixed. */
export class LoadError extends DfaissError {
  constructor(
    message: string,
    readonly resumeRow: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

interface Pending {
  start: number;
  count: number;
  buffer: VectorBuffer;
  promise: Promise<void>;
  settled: boolean;
  error: Error | null;
}

export async function loadVectors(opts: LoadOptions): Promise<LoadResult> {
  const { client, file, indexId } = opts;
  const t0 = performance.now();
  const n = (option: LoadOptionName): string => opts.names?.[option] ?? (option === 'drop' ? `dropIndex('${indexId}')` : option);
  const batchSize = opts.batchSize ?? 1000;
  const start = opts.start ?? 0;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new ValidationError(n('batchSize'), 'a positive number of rows per batch', batchSize);
  if (!Number.isSafeInteger(start) || start < 0 || start > file.rows) {
    throw new ValidationError(n('start'), `a row from 0 to ${file.rows} (the rows of ${file.path})`, start);
  }
  if (opts.limit !== undefined && (!Number.isSafeInteger(opts.limit) || opts.limit < 0)) throw new ValidationError(n('limit'), 'a non-negative number of rows', opts.limit);
  const end = opts.limit === undefined ? file.rows : Math.min(file.rows, start + opts.limit);
  const total = end - start;
  // A load smaller than servers x batch size still reaches every server (a shard that got
  // nothing cannot be trained).
  const rowsPerBatch = Math.max(1, Math.min(batchSize, Math.ceil(total / client.numServers)));
  const inFlight = Math.max(1, opts.inFlight ?? 2 * client.numServers);
  const trainTimeoutMs = opts.trainTimeoutMs ?? 86_400_000;

  if (opts.cfg && opts.cfg.dim !== file.dim) {
    throw new ValidationError(`${n('cfg')} dim`, `${file.dim}, the dimension of ${file.path}`, opts.cfg.dim);
  }
  // forceReload false: a resumed load keeps an index that is already in memory (a different cfg is still applied).
  if (opts.loadIndex) await client.loadIndex(indexId, opts.cfg, false);
  else if (opts.cfg) await client.createIndex(indexId, opts.cfg);
  else throw new ValidationError(n('cfg'), `an index config to create the index with (or ${n('loadIndex')} to use a saved one)`, undefined);
  // A loaded index's dimension comes from its saved cfg.
  const infos = (await client.status()).map((s) => (s.indexes as Record<string, { dim?: number; ntotal?: number; buffered?: number }> | undefined)?.[indexId]);
  const dim = infos.map((i) => i?.dim).find((d) => d !== undefined);
  if (dim !== undefined && dim !== file.dim) {
    throw new ValidationError('vector file', `vectors of dimension ${dim} (the dim of the index '${indexId}' on the servers)`, `dimension ${file.dim} in ${file.path}`);
  }
  const held = infos.reduce((n, i) => n + (i?.ntotal ?? 0) + (i?.buffered ?? 0), 0);
  // With record ids every row is an upsert: loading again replaces, never duplicates.
  if (held > 0 && !opts.append && !opts.idsForRows) {
    throw new DfaissError(
      `index '${indexId}' already holds ${held} vectors: loading would store these rows next to them (twice if it is the same file). ` +
        `Pass ${n('append')} to add anyway (e.g. to resume with ${n('start')}), or drop the index first (${n('drop')})`,
    );
  }

  // ---- stream the rows: a pool of inFlight + 1 buffers, a batch is read while others travel ----
  const pending: Pending[] = [];
  const free: VectorBuffer[] = [];
  let allocated = 0;
  let done = 0;
  let next = start;
  let failure: Error | null = null;
  const failedStarts: number[] = [];
  let lastProgress = 0;
  const progress = (phase: LoadProgress['phase']): void => opts.onProgress?.({ done, total, elapsedMs: performance.now() - t0, phase });

  const settleOldest = async (): Promise<void> => {
    const p = pending[0]!;
    await p.promise;
    pending.shift();
    free.push(p.buffer);
  };

  while (next < end && !failure && !opts.signal?.aborted) {
    if (free.length === 0 && allocated > inFlight) await settleOldest();
    if (failure || opts.signal?.aborted) break;
    let buffer = free.pop();
    if (!buffer) {
      buffer = file.allocate(rowsPerBatch);
      allocated++;
    }
    const count = Math.min(rowsPerBatch, end - next);
    const rows = await file.read(next, count, buffer);
    const metadata = Array.from({ length: count }, (_, i) => next + i);
    const entry: Pending = { start: next, count, buffer, settled: false, error: null, promise: Promise.resolve() };
    const ids = opts.idsForRows?.(next, count);
    entry.promise = (ids ? client.upsert(indexId, ids, rows, metadata) : client.addIndexData(indexId, rows, metadata)).then(
      () => {
        entry.settled = true;
        done += count;
        const now = performance.now();
        if (now - lastProgress >= 100 || done === total) {
          lastProgress = now;
          progress('adding');
        }
      },
      (err: Error) => {
        entry.settled = true;
        entry.error = err;
        failedStarts.push(entry.start);
        failure ??= err;
      },
    );
    pending.push(entry);
    next += count;
  }
  await Promise.all(pending.map((p) => p.promise));
  const addSeconds = (performance.now() - t0) / 1000;
  // Every row before the first unacknowledged batch is stored.
  const resumeRow = failedStarts.length ? Math.min(...failedStarts) : next;
  if (failure) {
    const err = failure as Error;
    const beyond = pending.filter((p) => !p.error && p.start > resumeRow).reduce((a, p) => a + p.count, 0);
    const dup = beyond ? ` (${beyond} rows after it were stored too and would be added again)` : '';
    throw new LoadError(`loading failed at row ${resumeRow}: ${err.message}; resume with ${n('start')} ${resumeRow} ${n('append')}${dup}`, resumeRow, { cause: err });
  }
  progress('adding');

  const result: LoadResult = {
    indexId,
    start,
    rowsLoaded: done,
    resumeRow,
    fileRows: file.rows,
    interrupted: opts.signal?.aborted === true && resumeRow < end,
    syncTrainCalled: false,
    state: null,
    ntotal: null,
    saved: false,
    addSeconds,
    trainSeconds: 0,
    saveSeconds: 0,
    totalSeconds: addSeconds,
    vectorsPerSecond: addSeconds > 0 ? done / addSeconds : 0,
  };
  if (result.interrupted) return result;

  // ---- train when needed, wait for TRAINED, save ----
  let slow: IndexClient | null = null;
  const slowClient = async (): Promise<IndexClient> => (slow ??= opts.connectSlow ? await opts.connectSlow(trainTimeoutMs) : client);
  try {
    const tTrain = performance.now();
    await client.trainingSettled(indexId); // a shared training the adds started
    let state = await client.getState(indexId);
    if (state !== IndexState.TRAINED) progress('training');
    if (state === IndexState.NOT_TRAINED || state === IndexState.TRAINING) {
      // Training started by trainNum finishes; shards below trainNum train now.
      result.syncTrainCalled = true;
      try {
        await (await slowClient()).syncTrain(indexId);
      } catch (err) {
        const empty = (await client.status()).filter((s) => ((s.indexes as Record<string, { total?: number }> | undefined)?.[indexId]?.total ?? 0) === 0);
        const hint = empty.length
          ? `; ${empty.length} server(s) received no vectors (${empty.map((s) => `${s.address.host}:${s.address.port}`).join(', ')}): load more rows or use a smaller ${n('batchSize')}`
          : '';
        throw new LoadError(`training index '${indexId}' failed: ${(err as Error).message}${hint}`, resumeRow, { cause: err });
      }
    }
    const deadline = Date.now() + trainTimeoutMs;
    let delay = 50;
    for (;;) {
      state = await client.getState(indexId);
      if (state === IndexState.TRAINED) break;
      if (Date.now() > deadline) throw new TimeoutError(`index '${indexId}' is still ${state} after ${Math.round(trainTimeoutMs / 1000)} s`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(1000, delay * 1.5);
    }
    result.state = state;
    result.trainSeconds = (performance.now() - tTrain) / 1000;
    if (opts.save ?? true) {
      progress('saving');
      const tSave = performance.now();
      await (await slowClient()).saveIndex(indexId);
      result.saved = true;
      result.saveSeconds = (performance.now() - tSave) / 1000;
    }
    result.ntotal = await client.getNtotal(indexId);
  } finally {
    const s = slow as IndexClient | null;
    if (s && s !== client) await s.close();
  }
  result.totalSeconds = (performance.now() - t0) / 1000;
  return result;
}
