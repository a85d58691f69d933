// The hard-link lock used for discovery-file appends (NFS-safe), and the SLURM batch script.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TimeoutError } from '../../src/errors.js';
import { acquireNfsLock, appendFileLocked, withNfsLock } from '../../src/discovery/nfs-lock.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'dfaiss-lock-'));
}

test('the lock makes read-modify-write exclusive among concurrent holders in one process', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'counter');
    writeFileSync(file, '0');
    await Promise.all(
      Array.from({ length: 20 }, () =>
        withNfsLock(file, async () => {
          const n = Number(await readFile(file, 'utf8'));
          await new Promise((r) => setTimeout(r, 1));
          await writeFile(file, String(n + 1));
        }),
      ),
    );
    assert.equal(readFileSync(file, 'utf8'), '20');
    assert.deepEqual(readdirSync(dir), ['counter'], 'lock and temp files are removed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the lock is exclusive across processes: 6 processes x 15 locked read-modify-writes lose nothing', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'counter');
    writeFileSync(file, '0');
    const lockModule = new URL('../../src/discovery/nfs-lock.ts', import.meta.url).href;
    const script = `
      import { withNfsLock } from ${JSON.stringify(lockModule)};
      import { readFile, writeFile } from 'node:fs/promises';
      const file = process.argv[1];
      for (let i = 0; i < 15; i++) {
        await withNfsLock(file, async () => {
          const n = Number(await readFile(file, 'utf8'));
          await new Promise((r) => setTimeout(r, 1));
          await writeFile(file, String(n + 1));
        });
      }`;
    const codes = await Promise.all(
      Array.from({ length: 6 }, () => {
        const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, file], { stdio: ['ignore', 'inherit', 'inherit'] });
        return new Promise<number | null>((r) => p.on('exit', r));
      }),
    );
    assert.deepEqual(codes, [0, 0, 0, 0, 0, 0]);
    assert.equal(readFileSync(file, 'utf8'), '90');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('appendFileLocked appends whole lines', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'discovery.txt');
    writeFileSync(file, '3\n');
    await Promise.all([0, 1, 2].map((i) => appendFileLocked(file, `host${i},${1000 + i}\n`)));
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    assert.equal(lines[0], '3');
    assert.deepEqual(lines.slice(1).sort(), ['host0,1000', 'host1,1001', 'host2,1002']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a stale lock (its holder died) is removed; a live one times out with a clear error', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'discovery.txt');
    writeFileSync(file, '1\n');
    // Held, fresh: waiters time out and name the lock file.
    const held = await acquireNfsLock(file);
    await assert.rejects(acquireNfsLock(file, { timeoutMs: 150 }), (err: Error) => err instanceof TimeoutError && err.message.includes(`${file}.lock`));
    await held.release();
    assert.equal(existsSync(`${file}.lock`), false);

    // Left behind by a dead holder 60 s ago: taken over.
    writeFileSync(`${file}.lock`, 'otherhost 1234\n');
    const old = new Date(Date.now() - 60_000);
    utimesSync(`${file}.lock`, old, old);
    const t0 = Date.now();
    await appendFileLocked(file, 'h,1\n', { staleMs: 5_000 });
    assert.ok(Date.now() - t0 < 2_000);
    assert.equal(readFileSync(file, 'utf8'), '1\nh,1\n');
    assert.deepEqual(readdirSync(dir), ['discovery.txt']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('release() after a takeover does not remove the new holder\'s lock', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'f');
    const first = await acquireNfsLock(file);
    // Pretend first hung for long: another process judges its lock stale and takes over.
    const old = new Date(Date.now() - 60_000);
    utimesSync(`${file}.lock`, old, old);
    const second = await acquireNfsLock(file, { staleMs: 1_000 });
    await first.release();
    assert.equal(existsSync(`${file}.lock`), true, 'second still holds it');
    await second.release();
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
