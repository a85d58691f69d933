/**
 * Turns a byte stream (socket chunks of any size) into complete, 8-aligned frames.
 *
 * - Small frames (<= stagingBytes) are gathered in a reused staging buffer and copied out
 *   into fresh memory: copying a few KiB is cheaper than any bookkeeping, and the consumer
 *   may keep such a frame as long as it likes (its release() is a no-op).
 * - Larger frames are copied straight from the socket chunks into a pooled buffer that is
 *   reused once the consumer calls release(). Until then nothing else writes to it, so
 *   zero-copy typed-array views stay valid while a handler works on them.
 * - The header is validated (magic, size limit) before any allocation for the body.
 * - pause()/resume() stop frame delivery at a frame boundary; chunks pushed meanwhile are
 *   queued (the owner pauses the socket too, so the queue stays short).
 */
import { HEADER_BYTES, parseHeader } from './frame.js';
import { BufferPool } from './pool.js';

export interface RawFrame {
  /** The whole frame, header included; byteOffset is a multiple of 8. */
  readonly bytes: Uint8Array;
  /** Lets the memory be reused. Idempotent. Views into `bytes` must not be used afterwards. */
  readonly release: () => void;
}

export interface AssemblerOptions {
  maxFrameBytes: number;
  pool?: BufferPool;
  /** Frames up to this size go through the staging buffer. Default 64 KiB. */
  stagingBytes?: number;
}

const noop = (): void => {};

export class FrameAssembler {
  maxFrameBytes: number;
  readonly pool: BufferPool;
  private readonly staging: Uint8Array;
  private start = 0;
  private end = 0;
  private large: { bytes: Uint8Array; release: () => void; size: number; filled: number } | null = null;
  private queue: Uint8Array[] = [];
  private paused = false;
  private busy = false;
  private failed = false;

  constructor(
    opts: AssemblerOptions,
    private readonly onFrame: (frame: RawFrame) => void,
  ) {
    this.maxFrameBytes = opts.maxFrameBytes;
    this.pool = opts.pool ?? new BufferPool();
    // Own ArrayBuffer, offset 0: frames copied out of it start aligned anyway, but the
    // header DataView reads stay cheap.
    this.staging = new Uint8Array(Math.max(HEADER_BYTES, opts.stagingBytes ?? 64 * 1024));
  }

  /**
   * Feeds bytes. Throws ProtocolError on a bad header; after that the assembler ignores
   * all input. `chunk` is copied, so the caller may reuse it afterwards.
   */
  push(chunk: Uint8Array): void {
    if (this.failed || chunk.byteLength === 0) return;
    if (this.paused || this.busy) {
      this.queue.push(chunk);
      return;
    }
    this.run(chunk);
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    // Called from inside onFrame: the running loop notices and continues by itself.
    if (!this.busy && !this.failed) this.run(undefined);
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Bytes of an incomplete frame held right now (0 at a frame boundary). */
  get partialBytes(): number {
    return (this.large ? this.large.filled : 0) + (this.end - this.start) + this.queue.reduce((n, c) => n + c.byteLength, 0);
  }

  /** Expected size of the frame being received, if its header has arrived. */
  get partialFrameSize(): number | undefined {
    if (this.large) return this.large.size;
    if (this.end - this.start >= HEADER_BYTES) {
      const dv = new DataView(this.staging.buffer, this.staging.byteOffset + this.start, 8);
      return dv.getUint32(4, true);
    }
    return undefined;
  }

  /** Stops everything and returns pooled memory (frames already delivered stay valid). */
  destroy(): void {
    this.failed = true;
    this.queue = [];
    this.large?.release();
    this.large = null;
    this.pool.destroy();
  }

  private run(first: Uint8Array | undefined): void {
    this.busy = true;
    try {
      this.drainStaging();
      if (first) this.consume(first);
      while (!this.paused && !this.failed && this.queue.length > 0) this.consume(this.queue.shift() as Uint8Array);
    } catch (err) {
      this.failed = true;
      this.large?.release();
      this.large = null;
      this.queue = [];
      throw err;
    } finally {
      this.busy = false;
    }
  }

  /** Consumes a chunk; when delivery gets paused midway, the unread rest goes to the queue front. */
  private consume(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.byteLength && !this.failed) {
      if (this.paused) {
        this.queue.unshift(chunk.subarray(off));
        return;
      }
      const large = this.large;
      if (large) {
        const n = Math.min(large.size - large.filled, chunk.byteLength - off);
        large.bytes.set(chunk.subarray(off, off + n), large.filled);
        large.filled += n;
        off += n;
        if (large.filled === large.size) {
          this.large = null;
          this.onFrame({ bytes: large.bytes.subarray(0, large.size), release: large.release });
        }
        continue;
      }
      if (this.end === this.staging.byteLength) this.compact();
      const n = Math.min(this.staging.byteLength - this.end, chunk.byteLength - off);
      // Cannot happen (drainStaging always leaves room); guards against a silent busy loop.
      if (n === 0) throw new Error('FrameAssembler: staging buffer full at a frame boundary');
      this.staging.set(chunk.subarray(off, off + n), this.end);
      this.end += n;
      off += n;
      this.drainStaging();
    }
  }

  /** Delivers complete small frames from staging; switches to large mode on a big header. */
  private drainStaging(): void {
    while (!this.paused && !this.failed && this.end - this.start >= HEADER_BYTES) {
      const { frameBytes } = parseHeader(this.staging, this.start, this.maxFrameBytes);
      const avail = this.end - this.start;
      if (frameBytes > this.staging.byteLength) {
        // avail < frameBytes here, since staging cannot hold the whole frame.
        const lease = this.pool.acquire(frameBytes);
        lease.bytes.set(this.staging.subarray(this.start, this.end), 0);
        this.large = { bytes: lease.bytes, release: lease.release, size: frameBytes, filled: avail };
        this.start = this.end = 0;
        return;
      }
      if (avail < frameBytes) {
        if (this.start + frameBytes > this.staging.byteLength) this.compact();
        return;
      }
      const bytes = new Uint8Array(frameBytes);
      bytes.set(this.staging.subarray(this.start, this.start + frameBytes));
      this.start += frameBytes;
      if (this.start === this.end) this.start = this.end = 0;
      this.onFrame({ bytes, release: noop });
    }
    if (this.start === this.end) this.start = this.end = 0;
  }

  private compact(): void {
    if (this.start === 0) return;
    this.staging.copyWithin(0, this.start, this.end);
    this.end -= this.start;
    this.start = 0;
  }
}
