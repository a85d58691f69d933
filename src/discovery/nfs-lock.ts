/**
 * An exclusive file lock that works on NFS, where flock()/fcntl() locks are unreliable
 * (servers of one SLURM job append to one discovery file on a shared file system).
 *
 * The classic hard-link protocol (as in procmail's lockfile and Python's flufl.lock):
 * write a unique temp file next to the target, link() it to `<target>.lock`, and own the
 * lock when the temp file's link count is 2. The link count is checked even when link()
 * reports an error, because over NFS a link() whose reply was lost is retried by the
 * client and reports EEXIST although it succeeded. Waiters retry with jittered
 * exponential back-off; a lock older than `staleMs` (its holder died) is removed.
 */
import { randomBytes } from 'node:crypto';
import { link, open, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { TimeoutError } from '../errors.js';

export interface NfsLockOptions {
  /** Give up after waiting this long. @default 120_000 */
  timeoutMs?: number;
  /** A lock file older than this is considered left by a dead holder and removed. @default 30_000 */
  staleMs?: number;
  /** First wait between attempts; grows x1.5 with jitter up to `maxDelayMs`. @default 10 */
  initialDelayMs?: number;
  /** @default 500 */
  maxDelayMs?: number;
}

export interface NfsLock {
  readonly lockPath: string;
  /** Releases the lock (only if this holder still owns it). Idempotent. */
  release(): Promise<void>;
}

/** Acquires `<target>.lock`. */
export async function acquireNfsLock(target: string, opts: NfsLockOptions = {}): Promise<NfsLock> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const staleMs = opts.staleMs ?? 30_000;
  const maxDelay = opts.maxDelayMs ?? 500;
  let delay = opts.initialDelayMs ?? 10;
  const lockPath = `${target}.lock`;
  const host = hostname();
  const tmpPath = `${lockPath}.${host}.${process.pid}.${randomBytes(6).toString('hex')}`;
  await writeFile(tmpPath, `${host} ${process.pid} ${new Date().toISOString()}\n`);
  const started = Date.now();
  try {
    for (;;) {
      // Fresh mtime on every attempt: once linked it is the lock's age, judged by waiters.
      const now = new Date();
      await utimes(tmpPath, now, now);
      try {
        await link(tmpPath, lockPath);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if ((await stat(tmpPath)).nlink === 2) break;
      await removeIfStale(lockPath, staleMs);
      const waited = Date.now() - started;
      if (waited >= timeoutMs) {
        throw new TimeoutError(
          `could not lock ${target} within ${(waited / 1000).toFixed(1)} s: ${lockPath} is held (remove it if no process holds it)`,
        );
      }
      await sleep(Math.min(delay * (0.5 + Math.random()), timeoutMs - waited));
      delay = Math.min(delay * 1.5, maxDelay);
    }
  } catch (err) {
    await unlink(tmpPath).catch(() => undefined);
    throw err;
  }
  let released = false;
  return {
    lockPath,
    async release() {
      if (released) return;
      released = true;
      try {
        // Still ours? (Another process may have judged it stale and taken over.)
        if ((await stat(tmpPath)).nlink === 2) await unlink(lockPath).catch(() => undefined);
      } finally {
        await unlink(tmpPath).catch(() => undefined);
      }
    },
  };
}

/** Runs `fn` while holding `<target>.lock`. */
export async function withNfsLock<T>(target: string, fn: () => Promise<T>, opts: NfsLockOptions = {}): Promise<T> {
  const lock = await acquireNfsLock(target, opts);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

/**
 * Appends `text` to `file` under the lock. The file is opened after the lock is taken
 * (NFS close-to-open consistency: the client then sees the current size, so concurrent
 * appenders from several machines cannot overwrite each other) and synced before release.
 */
export async function appendFileLocked(file: string, text: string, opts: NfsLockOptions = {}): Promise<void> {
  await withNfsLock(
    file,
    async () => {
      const fh = await open(file, 'a');
      try {
        await fh.write(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
    },
    opts,
  );
}

async function removeIfStale(lockPath: string, staleMs: number): Promise<void> {
  try {
    const st = await stat(lockPath);
    if (Date.now() - st.mtimeMs > staleMs) await unlink(lockPath);
  } catch {
    /* gone already, or removed by another waiter */
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
