/**
 * The background adder: moves the pending buffer into FAISS in arrival order, in chunks (so
 * FAISS ids equal internal ids), and the pause gate around it: snapshots (quiesce) and
 * compactions (betweenChunks) run between two chunks while the adder parks.
 */
import type { FaissIndex } from '../native/index.js';
import { Widener, type PendingBuffer } from './pending-buffer.js';
import { idRange } from './shard-records.js';

export interface AdderTarget {
  readonly index: FaissIndex;
  readonly buffer: PendingBuffer;
  readonly dim: number;
  /** Largest chunk handed to FAISS at once. */
  readonly chunkRows: number;
  /** Internal ids below this are in FAISS. */
  indexedUpTo(): number;
  /** FAISS now holds internal ids [at, at + rows) (called in the tick the buffer shrinks). */
  indexed(at: number, rows: number): void;
}

export class Adder {
  /** quiesce() / betweenChunks() holders; the adder waits between chunks while > 0. */
  private paused = 0;
  private parked: (() => void) | null = null;
  private chunkInFlight: Promise<void> | null = null;

  /**
   * Runs `cut` synchronously at a moment when FAISS, the buffer and the metadata agree:
   * no background add chunk is in progress (the adder parks between chunks meanwhile).
   * Anything `cut` starts synchronously on the index (e.g. writeFile's read lock) is
   * ordered before the adder's next chunk.
   */
  async quiesce<T>(cut: () => T): Promise<T> {
    this.paused++;
    try {
      while (this.chunkInFlight) await this.chunkInFlight;
      return cut();
    } finally {
      this.unpause();
    }
  }

  /**
   * Runs `job` (a FAISS write that must not interleave with the background adder, e.g. a
   * compaction) between two add chunks: the adder parks meanwhile, and snapshots wait for it.
   */
  async betweenChunks<T>(job: () => Promise<T>): Promise<T> {
    this.paused++;
    try {
      while (this.chunkInFlight) await this.chunkInFlight;
      const p = job();
      this.chunkInFlight = p.then(
        () => {},
        () => {},
      );
      try {
        return await p;
      } finally {
        this.chunkInFlight = null;
      }
    } finally {
      this.unpause();
    }
  }

  /** Adds everything buffered (and whatever arrives meanwhile) to FAISS; resolves when the buffer is empty. */
  async run(t: AdderTarget): Promise<void> {
    const { index, buffer } = t;
    const ivf = index.isIvf;
    // One chunk is in FAISS's hands at a time, so float16 chunks share one widening buffer,
    // held while this run lasts (an idle shard holds none).
    const widener = new Widener(t.dim);
    if (ivf) await preassign(index, buffer, widener);
    while (buffer.batches.length > 0) {
      if (this.paused > 0) {
        await this.park();
        continue;
      }
      // Only the adder takes from the head of the buffer, so the chunk stays valid while
      // its lists are computed (under the shared lock: searches go on) or while parked.
      const chunk = buffer.takeChunk(t.chunkRows);
      const vectors = await widener.widen(chunk.vectors);
      const assign = ivf ? (chunk.assign ?? (await index.assign(vectors))) : undefined;
      while (this.paused > 0) await this.park();
      // After a compaction an IVF index holds fewer vectors than ids handed out: FAISS
      // would number new vectors from its ntotal, so they get their internal ids explicitly.
      const from = t.indexedUpTo();
      const explicit = ivf && index.ntotal !== from ? idRange(from, chunk.rows) : null;
      const add = explicit ? index.addWithIds(vectors, explicit) : assign ? index.addPreassigned(vectors, assign) : index.add(vectors);
      const job = add.then(() => {
        // FAISS, the buffer and the records change together, in the same tick.
        const at = t.indexedUpTo();
        buffer.commit(chunk);
        t.indexed(at, chunk.rows);
      });
      this.chunkInFlight = job.then(
        () => {},
        () => {},
      );
      try {
        await job;
      } finally {
        this.chunkInFlight = null;
      }
    }
  }

  private park(): Promise<void> {
    return new Promise<void>((resolve) => (this.parked = resolve));
  }

  /** Ends one quiesce (or compaction) pause; the last one wakes the parked adder. */
  private unpause(): void {
    this.paused--;
    if (this.paused === 0) {
      const wake = this.parked;
      this.parked = null;
      wake?.();
    }
  }
}

/**
 * IVF: computes the lists of everything buffered now and sizes every inverted list once,
 * before the adds. Appending batch by batch grows each list by doubling, which left ~40 MiB
 * of slack and freed blocks per 125k x 128 shard (measured).
 */
async function preassign(index: FaissIndex, buffer: PendingBuffer, widener: Widener): Promise<void> {
  const counts = new Uint32Array(index.nlist);
  for (const b of buffer.batches.slice()) {
    b.assign ??= await index.assign(await widener.widen(b.vectors));
    for (let i = 0; i < b.assign.length; i++) counts[Number(b.assign[i])]!++;
  }
  await index.reserveLists(counts);
}
