/**
 * One readers-writer lock per index id. Life-cycle calls (create, load, drop) hold it
 * exclusively; calls that write into an existing shard (add, save, revoke, training)
 * share it. So a reload never closes a shard under an add that already reached its
 * write-ahead log (that add is acknowledged), an add that arrives during a reload goes
 * to the reloaded shard, and a drop never deletes a folder another call is writing.
 * Searches take no lock: they read whichever shard is current.
 */
import { RwLock } from '../native/rwlock.js';

export class IndexLocks {
  private readonly locks = new Map<string, { lock: RwLock; users: number }>();

  shared<T>(indexId: string, fn: () => Promise<T>): Promise<T> {
    return this.with(indexId, false, fn);
  }

  exclusive<T>(indexId: string, fn: () => Promise<T>): Promise<T> {
    return this.with(indexId, true, fn);
  }

  private async with<T>(indexId: string, write: boolean, fn: () => Promise<T>): Promise<T> {
    let entry = this.locks.get(indexId);
    if (!entry) {
      entry = { lock: new RwLock(), users: 0 };
      this.locks.set(indexId, entry);
    }
    entry.users++;
    try {
      return await (write ? entry.lock.write(fn) : entry.lock.read(fn));
    } finally {
      // Ids come from clients: forget a lock nobody holds or waits for.
      if (--entry.users === 0) this.locks.delete(indexId);
    }
  }
}
