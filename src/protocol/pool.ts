/**
 * Small per-connection pool of receive buffers for large frames.
 *
 * Why: on the target VMs fresh memory costs ~0.5 s per 256 MB at first touch, while
 * copying into an already-touched buffer is ~10x faster. A bulk-add connection receives
 * frames of similar size one after another, so keeping one or two buffers warm removes
 * the page-fault cost from every batch after the first.
 *
 * A buffer goes back to the pool only when its lease is released, i.e. when the consumer
 * says it no longer uses views into it. Unreleased leases are simply garbage collected.
 */

export interface PoolOptions {
  /** Free buffers kept for reuse. Default 2. */
  maxBuffers?: number;
  /** Total bytes of free buffers kept. Default 64 MiB. */
  maxBytes?: number;
  /** Sizes are rounded up to this so slightly different frame sizes share buffers. Default 1 MiB. */
  granularity?: number;
  /**
   * Allocator for new buffers (8-aligned, byteOffset 0) and its explicit free, called for
   * buffers the pool drops. Default: Buffer.allocUnsafeSlow, freed by the GC. The server
   * passes the native addon's mmap allocator, whose free returns the memory at once
   * (a dropped 3 MiB buffer otherwise stays resident until a GC that nothing triggers).
   */
  allocate?: (bytes: number) => Uint8Array;
  free?: (buf: Uint8Array) => void;
}

export interface Lease {
  /** 8-aligned (byteOffset 0) memory of at least the requested size. */
  readonly bytes: Uint8Array;
  /** Returns the memory to the pool. Idempotent; views into `bytes` must not be used afterwards. */
  release(): void;
}

export class BufferPool {
  private readonly maxBuffers: number;
  private readonly maxBytes: number;
  private readonly granularity: number;
  private idle: Uint8Array[] = [];
  private idleBytes = 0;
  private destroyed = false;
  private readonly allocate: (bytes: number) => Uint8Array;
  private readonly dispose: (buf: Uint8Array) => void;
  /** Counters for tests and metrics. */
  allocations = 0;
  reuses = 0;

  constructor(opts: PoolOptions = {}) {
    this.maxBuffers = opts.maxBuffers ?? 2;
    this.maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
    this.granularity = Math.max(8, opts.granularity ?? 1024 * 1024);
    // allocUnsafeSlow: own ArrayBuffer at offset 0 (8-aligned), not from Node's shared slab.
    this.allocate = opts.allocate ?? ((bytes) => Buffer.allocUnsafeSlow(bytes));
    this.dispose = opts.free ?? (() => {});
  }

  acquire(size: number): Lease {
    let best = -1;
    for (let i = 0; i < this.idle.length; i++) {
      const cap = (this.idle[i] as Uint8Array).byteLength;
      if (cap >= size && (best < 0 || cap < (this.idle[best] as Uint8Array).byteLength)) best = i;
    }
    let buf: Uint8Array;
    if (best >= 0) {
      buf = this.idle.splice(best, 1)[0] as Uint8Array;
      this.idleBytes -= buf.byteLength;
      this.reuses++;
    } else {
      const rounded = Math.ceil(size / this.granularity) * this.granularity;
      buf = this.allocate(rounded <= this.maxBytes ? rounded : size);
      this.allocations++;
    }
    let released = false;
    return {
      bytes: buf,
      release: () => {
        if (released) return;
        released = true;
        this.put(buf);
      },
    };
  }

  private put(buf: Uint8Array): void {
    if (this.destroyed || buf.byteLength > this.maxBytes) {
      this.dispose(buf);
      return;
    }
    this.idle.push(buf);
    this.idleBytes += buf.byteLength;
    // Drop the oldest buffers first: the newest best matches the current traffic.
    while (this.idle.length > this.maxBuffers || this.idleBytes > this.maxBytes) {
      const dropped = this.idle.shift() as Uint8Array;
      this.idleBytes -= dropped.byteLength;
      this.dispose(dropped);
    }
  }

  get retainedBytes(): number {
    return this.idleBytes;
  }

  /** Drops free buffers; later releases are ignored. */
  destroy(): void {
    this.destroyed = true;
    for (const b of this.idle) this.dispose(b);
    this.idle = [];
    this.idleBytes = 0;
  }
}
