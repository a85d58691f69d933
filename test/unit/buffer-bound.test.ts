// The buffer bound counts a training sample held on the server (issue 14, item 4): the
// trainer holds its sample and its buffer at once, so both are memory the bound covers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferBound } from '../../src/server/buffer-bound.js';
import { IndexState } from '../../src/shard/state.js';
import { ServerBusyError } from '../../src/errors.js';
import type { Shard } from '../../src/shard/shard.js';
import type { Logger } from '../../src/util/logger.js';

const KiB = 1024;
const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} } as unknown as Logger;

/** The part of a shard the bound reads. */
function shardLike(over: { bufferedBytes: number; sampleBytes: number; state?: IndexState }): Shard {
  return { cfg: { trainNum: 1000, dim: 8 }, sharedTraining: true, state: IndexState.TRAINING, ...over } as unknown as Shard;
}

test('a training sample held here counts against the bound; the first batch still gets in beside it', async () => {
  const bound = new BufferBound({ maxBufferedBytes: 1024 * KiB, waitMs: 60, rank: 0, log: quiet });
  const shard = shardLike({ bufferedBytes: 0, sampleBytes: 900 * KiB });
  const first = await bound.room('x', () => shard, 200 * KiB); // nothing buffered yet: always admitted
  const err = await bound.room('x', () => shard, 200 * KiB).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof ServerBusyError, `refused with ${String(err)}`);
  assert.match(err.message, /holds 1\.1 MiB of vectors not yet in FAISS \(0\.9 MiB of them its training sample\) and may hold 1\.0 MiB/);
  assert.match(err.message, /once its training frees room/);
  first();
  // Without the sample the same two adds fit.
  const lighter = shardLike({ bufferedBytes: 0, sampleBytes: 0 });
  const a = await bound.room('y', () => lighter, 200 * KiB);
  const b = await bound.room('y', () => lighter, 200 * KiB);
  a();
  b();
});
