/**
 * Asynchronous readers-writer lock. Searches share it; writes (train, add, remove,
 * parameter changes) are exclusive. Waiting happens here, in promises, rather than in
 * the native mutex, so no libuv worker thread ever sits blocked. A waiting writer stops
 * new readers from jumping ahead (no writer starvation during a stream of searches).
 */
export class RwLock {
  private readers = 0;
  private writer = false;
  private readonly queue: Array<{ write: boolean; wake: () => void }> = [];

  /** A read started now would run at once (no writer holds the lock or waits for it). */
  get readableNow(): boolean {
    return this.queue.length === 0 && !this.writer;
  }

  async read<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(false);
    try {
      return await fn();
    } finally {
      this.readers--;
      this.drain();
    }
  }

  async write<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(true);
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.drain();
    }
  }

  private acquire(write: boolean): Promise<void> {
    if (this.queue.length === 0 && !this.writer && (!write || this.readers === 0)) {
      if (write) this.writer = true;
      else this.readers++;
      return Promise.resolve();
    }
    return new Promise((wake) => this.queue.push({ write, wake }));
  }

  private drain(): void {
    while (this.queue.length > 0 && !this.writer) {
      const next = this.queue[0]!;
      if (next.write) {
        if (this.readers > 0) return;
        this.queue.shift();
        this.writer = true;
        next.wake();
        return;
      }
      this.queue.shift();
      this.readers++;
      next.wake();
    }
  }
}
