/**
 * Where a batch goes. Batches without ids: round-robin per index, and a server that is down
 * or fails while holding the batch is skipped (the batch moves on; the failed server is told
 * to revoke its copy). Records with ids: each on its home server (records.ts), never moved.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConnectionError, ServerBusyError, ServerUnavailableError, TimeoutError, ValidationError } from '../errors.js';
import { toMatrix, type VectorsInput } from '../vectors.js';
import type { AddSlots } from './add-slots.js';
import type { CallControl } from './call-control.js';
import type { Connections } from './connections.js';
import type { IndexMeta } from './index-meta.js';
import * as rec from './records.js';
import type { RecordId } from './records.js';
import type { Revocations } from './revocations.js';
import type { ArgsOf } from '../contract.js';
import type { ShardOperation } from '../shard-operation.js';
import type { AddReply } from './training-trigger.js';

/** A batch as a row-major matrix: float32 (validated, no copy when it is one) or float16 as it is. */
export function batchMatrix(vectors: VectorsInput | Uint16Array, dim: number): { data: Float32Array | Uint16Array; n: number } {
  if (!(vectors instanceof Uint16Array)) return toMatrix(vectors, dim, 'vectors');
  if (vectors.length === 0 || vectors.length % dim !== 0) {
    throw new ValidationError('vectors', `a Uint16Array (float16) whose length is a positive multiple of dim=${dim}`, `length ${vectors.length}`);
  }
  return { data: vectors, n: vectors.length / dim };
}

/** How long adds are resent to a busy server (ServerBusyError) by default: 1 h, a research-scale shared training. */
export const DEFAULT_BUSY_RETRY_MS = 3_600_000;

/** How adds treat busy servers: resend for up to `retryMs`, telling `onBusy` of each busy reply. */
export interface BusyPolicy {
  retryMs: number;
  onBusy?: (server: string, err: ServerBusyError) => void;
}

/**
 * The client's busy policy from its options: `retryMs` (checked; default
 * DEFAULT_BUSY_RETRY_MS), each busy reply told to `emit` (the serverBusy event), and one
 * `log` line per 30 s while it lasts, so a load that stalls on a training says why.
 */
export function busyPolicy(retryMs: number | undefined, log: (message: string) => void, emit: (server: string, err: ServerBusyError) => void): BusyPolicy {
  const ms = retryMs ?? DEFAULT_BUSY_RETRY_MS;
  if (!Number.isSafeInteger(ms) || ms < 0) throw new ValidationError('busyRetryMs', 'a non-negative integer of milliseconds', retryMs);
  let loggedAt = -Infinity;
  return {
    retryMs: ms,
    onBusy: (server, err) => {
      emit(server, err);
      if (Date.now() - loggedAt < 30_000) return;
      loggedAt = Date.now();
      log(`dfaiss: ${server} is busy, resending adds until it has room (busyRetryMs ${ms}): ${err.message}`);
    },
  };
}

/**
 * One addIndexData request, resent while the server answers ServerBusyError (it stored
 * nothing: its buffer of vectors waiting for training is full) after pauses growing from
 * 50 ms to 2 s, for at most `busyRetryMs`, or the call's own `timeoutMs` when it sets a
 * shorter one (then the ServerBusyError is thrown); the abort signal ends the wait at once.
 */
export async function sendAdd(
  server: ShardOperation,
  args: ArgsOf<'addIndexData'>,
  attachments: Parameters<ShardOperation['call']>[3],
  control: CallControl,
  busy: BusyPolicy,
): Promise<AddReply> {
  // timeoutMs 0 means no deadline of the call's own.
  const retryMs = control.timeoutMs ? Math.min(busy.retryMs, control.timeoutMs) : busy.retryMs;
  const since = Date.now();
  for (let pause = 50; ; pause = Math.min(2000, pause * 2)) {
    try {
      return (await server.call('bulk', 'addIndexData', args, attachments, control)).result;
    } catch (err) {
      if (!(err instanceof ServerBusyError) || Date.now() - since + pause > retryMs) throw err;
      busy.onBusy?.(server.name, err);
    }
    // Aborted: reject with the signal's reason, as every other client wait does.
    await sleep(pause, undefined, { signal: control.signal }).catch(() => {
      throw control.signal?.reason;
    });
  }
}

/**
 * Stores one batch on one server, starting at the index's next server in round-robin order;
 * returns which server stored it and its reply. Fails with ServerUnavailableError when every
 * server failed.
 */
export async function placeBatch(
  servers: readonly ShardOperation[],
  revocations: Revocations,
  batch: { indexId: string; meta: IndexMeta; n: number; trainAsync: boolean; attachments: Parameters<ShardOperation['call']>[3] },
  control: CallControl = {},
  busy: BusyPolicy = { retryMs: DEFAULT_BUSY_RETRY_MS },
): Promise<{ server: number; reply: AddReply }> {
  const { indexId, meta, n, trainAsync, attachments } = batch;
  const failures: string[] = [];
  // Attempts on servers that failed while holding the batch: revoked there, and held
  // durably by the server that finally stores it (movedFrom), so no client has to outlive them.
  const moved: ReturnType<Revocations['queue']>[] = [];
  const movedFrom: Array<[number, string]> = [];
  // Placement advances by one per batch; the fallbacks of this batch walk on from its
  // own start (concurrent adds share meta.next, so it cannot drive the retries).
  const start = meta.next;
  meta.next = (meta.next + 1) % servers.length;
  // Each server at most once. A server known to be down never saw the batch. One that
  // failed while holding it may have stored it: that key is revoked there later, and the
  // next server gets a fresh attempt (fresh key), so the batch ends up visible once.
  for (let tried = 0; tried < servers.length; tried++) {
    const i = (start + tried) % servers.length;
    const server = servers[i]!;
    const key = randomUUID();
    let reply: AddReply;
    try {
      const args = { indexId, n, trainAsync, key, ...(movedFrom.length > 0 ? { movedFrom } : {}) };
      reply = await sendAdd(server, args, attachments, control, busy);
      if (reply?.revoked) throw new ConnectionError(`${server.name} refused batch key ${key} as revoked`); // fresh keys: not expected
    } catch (err) {
      if (control.signal?.aborted) {
        // Aborted by the caller while the server may hold it: revoke it there, so an
        // aborted add leaves nothing behind (and the caller may resend it).
        revocations.queue(i, indexId, key);
        throw err;
      }
      if (!(err instanceof ConnectionError || err instanceof TimeoutError)) throw err;
      failures.push(`${server.name}: ${err.message}`);
      if (!(err instanceof ServerUnavailableError)) {
        moved.push(revocations.queue(i, indexId, key));
        if (server.rank !== undefined) movedFrom.push([server.rank, key]);
      }
      continue;
    }
    revocations.stored(moved, i);
    return { server: i, reply };
  }
  throw new ServerUnavailableError(
    servers.map((s) => s.name).join(', '),
    `batch not stored: every server failed (${failures.join('; ')}). Resend it once a server is back` +
      (moved.length > 0 ? '; servers that failed while holding it will be told to drop any copy they kept (pendingRevocations)' : ''),
  );
}

/**
 * Stores records with ids, each on its home server, in parallel (one add slot per part);
 * upsert replaces older versions. `stored` is told of each part's reply and returns the
 * training this part started or joined, if any; a part settles once that training has
 * (the slot is free before).
 */
export async function placeRecords(
  servers: readonly ShardOperation[],
  slots: AddSlots,
  batch: { indexId: string; dim: number; data: Float32Array | Uint16Array; n: number; ids: RecordId[]; metadata: readonly unknown[] | null | undefined; upsert: boolean; trainAsync: boolean },
  stored: (server: number, reply: AddReply) => Promise<void> | null,
  control: CallControl = {},
  busy: BusyPolicy = { retryMs: DEFAULT_BUSY_RETRY_MS },
): Promise<Array<void | null>> {
  const { indexId, trainAsync } = batch;
  return rec.sendByHome(
    {
      servers,
      send: async (i, args, attachments) => {
        const reply = await slots.with(() => sendAdd(servers[i]!, { indexId, trainAsync, key: randomUUID(), ...args }, attachments, control, busy), control.signal);
        return stored(i, reply);
      },
    },
    batch,
  );
}

/** Refuses a batch whose kind (with or without ids) differs from what the index holds. */
export async function checkIdMode(conns: Connections, indexId: string, meta: IndexMeta, withIds: boolean, control: CallControl = {}): Promise<void> {
  if (meta.withIds == null) {
    const infos = await conns.infos(indexId, control);
    const kinds = new Set(infos.flatMap((i) => (i && typeof i.withIds === 'boolean' ? [i.withIds] : [])));
    if (kinds.size === 1) meta.withIds = [...kinds][0]!;
  }
  if (meta.withIds != null && meta.withIds !== withIds) {
    throw new ValidationError(
      'ids',
      meta.withIds ? `one id per vector: index '${indexId}' stores records with ids (every batch must carry ids)` : `no ids: index '${indexId}' stores vectors without ids (batches with and without ids cannot be mixed; use a new index)`,
      withIds ? 'a batch with ids' : 'a batch without ids',
    );
  }
  meta.withIds ??= withIds;
}
