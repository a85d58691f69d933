// Snapshots + WAL in process: restore rules, torn and corrupt files, group commit, disk full.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, truncateSync, writeSync, closeSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultIndexCfg } from '../../src/config/index.js';
import { DurableShard } from '../../src/shard/durable-shard.js';
import { Shard } from '../../src/shard/shard.js';
import { IndexState } from '../../src/shard/state.js';
import { encodeMetadata, decodeMetadataItem } from '../../src/protocol/metadata.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { StorageError } from '../../src/errors.js';
import { readRecords } from '../../src/shard/shard-records.js';

const dim = 16;
const data = new SyntheticDataset({ dim, seed: 21 });
const cfg = defaultIndexCfg({ indexBuilderType: 'ivf_simple', dim, centroids: 8, trainNum: 400, metric: 'l2', nprobe: 8, trainMode: 'per-shard' }); // the shard's own training (shared training is tested below)

async function addBatch(s: DurableShard, b: number, rows = 100): Promise<void> {
  const { blob, offsets } = encodeMetadata(Array.from({ length: rows }, (_, i) => [b, i]), rows);
  await s.add(data.base(rows, b * rows), blob, offsets);
}

function batchesIn(s: DurableShard): Map<number, number> {
  const count = new Map<number, number>();
  for (let i = 0; i < s.shard.metadata.size; i++) {
    const [b] = decodeMetadataItem(s.shard.metadata.get(i)) as [number, number];
    count.set(b, (count.get(b) ?? 0) + 1);
  }
  return count;
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'dfaiss-dur-'));
}

test('restore = newest snapshot + WAL replay: every batch exactly once, state and search preserved', async () => {
  const dir = join(tmp(), 'shard');
  const s = await DurableShard.create(dir, cfg);
  for (let b = 0; b < 3; b++) await addBatch(s, b); // 300 < trainNum: buffered
  await s.snapshot();
  for (let b = 3; b < 8; b++) await addBatch(s, b); // trains, then background adds
  await s.shard.idle();
  await s.snapshot();
  for (let b = 8; b < 10; b++) await addBatch(s, b); // only in the WAL
  await s.shard.idle();
  const before = await s.shard.search(data.queries(5), 5, false);
  // a crash: no final snapshot, the log is simply abandoned
  const { shard: r, report } = await DurableShard.open(dir, null);
  await r.shard.idle();
  assert.ok(report.generation >= 2, `generation ${report.generation}`); // training adds one of its own
  assert.equal(report.walRecords, 2);
  assert.deepEqual(report.skipped, []);
  assert.equal(r.shard.state, IndexState.TRAINED);
  assert.deepEqual([...batchesIn(r).entries()].sort((a, b) => a[0] - b[0]), Array.from({ length: 10 }, (_, b) => [b, 100]));
  assert.equal(r.shard.info.ntotal, 1000);
  const after = await r.shard.search(data.queries(5), 5, false);
  assert.deepEqual(after.labels, before.labels);
  assert.deepEqual(after.distances, before.distances);
  await r.close();
  await s.close();
});

test('shared training: trained.bin brings the installed state back when no snapshot has it; a damaged file is ignored', async () => {
  const sharedCfg = { ...cfg, trainMode: 'shared' as const };
  const trainerDir = join(tmp(), 'trainer');
  const trainer = await DurableShard.create(trainerDir, sharedCfg);
  for (let b = 0; b < 5; b++) await addBatch(trainer, b); // 500 >= trainNum, but shared: no training here
  assert.equal(trainer.shard.state, IndexState.NOT_TRAINED);
  const trained = await trainer.trainShared(new Float32Array(0));
  assert.deepEqual(trained.layout, [['coarse', 8 * dim]], 'IVF-Flat: the state is its nlist x dim centroids');
  assert.equal(trained.nlist, 8);
  const centroids = trained.data;
  assert.equal(await trainer.trainShared(new Float32Array(0)), trained, 'later calls get the same state');
  await trainer.shard.idle();
  assert.equal(trainer.shard.info.ntotal, 500);
  await trainer.close();

  for (const damaged of [false, true]) {
    const dir = join(tmp(), 'shard');
    const s = await DurableShard.create(dir, sharedCfg);
    for (let b = 0; b < 3; b++) await addBatch(s, b);
    // The log as a crash right after the install would leave it: the snapshot that follows
    // the install covers the log, which is then trimmed away.
    cpSync(join(dir, 'wal'), `${dir}.wal-at-install`, { recursive: true });
    assert.equal(await s.installTrained(trained), true);
    assert.equal(await s.installTrained(trained), false, 'a repeated install is a no-op');
    await s.shard.idle();
    const installedCentroids = (await s.shard.centroids()).data;
    assert.deepEqual(installedCentroids, centroids);
    await s.close();
    // As if the process died before any snapshot held the trained index: WAL + trained.bin only.
    for (const n of readdirSync(dir)) if (n.startsWith('snapshot-')) rmSync(join(dir, n), { recursive: true });
    rmSync(join(dir, 'wal'), { recursive: true });
    cpSync(`${dir}.wal-at-install`, join(dir, 'wal'), { recursive: true });
    if (damaged) {
      const fd = openSync(join(dir, 'trained.bin'), 'r+');
      writeSync(fd, Buffer.from([0xff]), 0, 1, 100);
      closeSync(fd);
    }
    const { shard: r } = await DurableShard.open(dir, null);
    await r.shard.idle();
    if (damaged) {
      // Data intact, untrained: the client trains the cluster again.
      assert.equal(r.shard.state, IndexState.NOT_TRAINED);
      assert.deepEqual([r.shard.info.buffered, r.shard.info.ntotal], [300, 0]);
    } else {
      assert.equal(r.shard.state, IndexState.TRAINED);
      assert.equal(r.shard.info.ntotal, 300);
      assert.deepEqual((await r.shard.centroids()).data, installedCentroids);
    }
    await r.close();
  }
});

test('zero-copy adds: a batch\'s memory is released once, after FAISS and every snapshot reading it are done', async () => {
  const dir = join(tmp(), 'shard');
  const flat = defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
  const s = await DurableShard.create(dir, flat);
  const released = new Map<number, number>();
  const jobs: Promise<unknown>[] = [];
  for (let b = 0; b < 20; b++) {
    const v = data.base(500, b * 500);
    const { blob, offsets } = encodeMetadata(Array.from({ length: 500 }, (_, i) => [b, i]), 500);
    // A released receive buffer is reused for the next frame: overwrite it, as reuse would.
    const release = (): void => {
      released.set(b, (released.get(b) ?? 0) + 1);
      v.fill(1e30);
    };
    jobs.push(s.add(v, blob, offsets, { release }));
    if (b % 4 === 1) jobs.push(s.snapshot());
  }
  await Promise.all(jobs);
  await s.shard.idle();
  assert.deepEqual([...released.values()], Array.from({ length: 20 }, () => 1));
  const check = async (shard: DurableShard, label: string): Promise<void> => {
    for (let b = 0; b < 20; b++) {
      const r = await shard.shard.search(data.base(1, b * 500 + 7), 1, false);
      assert.equal(Number(r.labels[0]), b * 500 + 7, `${label}: batch ${b}`);
      assert.equal(r.distances[0], 0, `${label}: batch ${b}`);
    }
  };
  await check(s, 'live');
  await s.close();
  const { shard: r } = await DurableShard.open(dir, null);
  await r.shard.idle();
  await check(r, 'restored');
  await r.close();
});

test('a search right after training waits for the add in flight instead of answering empty', async () => {
  const shard = new Shard(defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 0 }));
  const rows = 200_000; // long enough that the background add is still running
  const { blob, offsets } = encodeMetadata(undefined, rows);
  await shard.add(data.base(rows), blob, offsets);
  await shard.syncTrain(); // resolves when the index exists; the buffer goes in in the background
  const r = await shard.search(data.base(1, 123), 1, false);
  assert.equal(Number(r.labels[0]), 123);
  assert.equal(r.distances[0], 0);
  await shard.close();
});

test('a pinned buffer (a snapshot reading it) is released only when unpinned', async () => {
  const shard = new Shard(defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 0 }));
  const released: number[] = [];
  for (let b = 0; b < 3; b++) {
    const { blob, offsets } = encodeMetadata(undefined, 100);
    await shard.add(data.base(100, b * 100), blob, offsets, { release: () => released.push(b) });
  }
  const unpin = shard.pinPending();
  assert.equal(shard.pendingVectors().length, 3);
  await shard.syncTrain(); // Flat: creates the index and adds the buffer
  await shard.idle();
  assert.equal(shard.info.ntotal, 300);
  assert.deepEqual(released, [], 'FAISS has the rows, but a snapshot may still be writing them');
  unpin();
  unpin(); // idempotent
  assert.deepEqual(released, [0, 1, 2]);
  await shard.close();
});

test('untrained data comes back in the buffer; training resumes when it is due', async () => {
  const dir = join(tmp(), 'shard');
  const s = await DurableShard.create(dir, cfg);
  for (let b = 0; b < 3; b++) await addBatch(s, b);
  const { shard: r } = await DurableShard.open(dir, null);
  assert.equal(r.shard.state, IndexState.NOT_TRAINED);
  assert.deepEqual([r.shard.info.buffered, r.shard.info.ntotal], [300, 0]);
  await addBatch(r, 3); // reaches trainNum
  await r.shard.idle();
  assert.equal(r.shard.state, IndexState.TRAINED);
  assert.equal(r.shard.info.ntotal, 400);
  await r.close();
  await s.close();
});

test('a torn or corrupt newest snapshot falls back to the previous one plus the WAL, and says so', async () => {
  for (const damage of ['truncate meta.bin', 'flip a byte of index.faiss', 'delete manifest.json']) {
    const dir = join(tmp(), 'shard');
    const s = await DurableShard.create(dir, cfg);
    for (let b = 0; b < 5; b++) await addBatch(s, b);
    await s.shard.idle();
    await s.snapshot();
    for (let b = 5; b < 7; b++) await addBatch(s, b);
    await s.shard.idle();
    await s.snapshot();
    await addBatch(s, 7);
    await s.shard.idle();
    await s.close();
    const newest = join(dir, readdirSync(dir).filter((n) => n.startsWith('snapshot-')).sort().pop()!);
    if (damage.startsWith('truncate')) truncateSync(join(newest, 'meta.bin'), 100);
    else if (damage.startsWith('flip')) {
      const fd = openSync(join(newest, 'index.faiss'), 'r+');
      writeSync(fd, Buffer.from([0xff, 0xee]), 0, 2, Math.floor(statSync(join(newest, 'index.faiss')).size / 2));
      closeSync(fd);
    } else rmSync(join(newest, 'manifest.json'));
    const { shard: r, report } = await DurableShard.open(dir, null);
    await r.shard.idle();
    assert.ok(report.generation >= 1, damage);
    assert.equal(report.skipped.length, 1, damage);
    assert.match(report.skipped[0]!, /snapshot \d+ skipped: .*(torn|checksum|manifest)/, damage);
    assert.equal(r.shard.info.total, 800, damage);
    assert.equal(batchesIn(r).size, 8, damage);
    assert.equal(r.shard.info.ntotal, 800, damage);
    await r.close();
  }
});

test('a torn WAL tail is cut off with a report; the complete records before it are restored', async () => {
  const dir = join(tmp(), 'shard');
  const s = await DurableShard.create(dir, cfg);
  for (let b = 0; b < 3; b++) await addBatch(s, b);
  await s.close();
  const walDir = join(dir, 'wal');
  const seg = join(walDir, readdirSync(walDir)[0]!);
  truncateSync(seg, statSync(seg).size - 10);
  const { shard: r, report } = await DurableShard.open(dir, null);
  assert.equal(report.walRecords, 2);
  assert.match(report.skipped.join('\n'), /torn record/);
  assert.equal(r.shard.info.total, 200);
  // later appends go to a new segment, after the torn one
  await addBatch(r, 9);
  await r.close();
  const { shard: again, report: rep2 } = await DurableShard.open(dir, null);
  assert.deepEqual([...batchesIn(again).keys()].sort(), [0, 1, 9]);
  assert.equal(rep2.walRecords, 3);
  await again.close();
  // a corrupted byte inside a record is caught by its checksum
  const seg2 = join(walDir, readdirSync(walDir).sort()[0]!);
  const bytes = readFileSync(seg2);
  const fd = openSync(seg2, 'r+');
  writeSync(fd, Buffer.from([bytes[100]! ^ 0xff]), 0, 1, 100);
  closeSync(fd);
  const { report: rep3 } = await DurableShard.open(dir, null);
  assert.match(rep3.skipped.join('\n'), /checksum mismatch/);
});

test('group commit: 50 concurrent batches land in one log segment, in order, and replay in that order', async () => {
  const dir = join(tmp(), 'shard');
  const s = await DurableShard.create(dir, defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2' }));
  await Promise.all(Array.from({ length: 50 }, (_, b) => addBatch(s, b, 10)));
  const segs = readdirSync(join(dir, 'wal'));
  assert.equal(segs.length, 1);
  const { shard: r } = await DurableShard.open(dir, null);
  // ids follow log order, which is the order the batches were appended
  for (let i = 0; i < 500; i++) assert.deepEqual(decodeMetadataItem(r.shard.metadata.get(i)), [Math.floor(i / 10), i % 10]);
  await r.close();
  await s.close();
});

test('disk full: the add fails with StorageError, earlier data is intact, the shard keeps serving', async (t) => {
  const mnt = join(tmp(), 'small');
  mkdirSync(mnt);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', mnt], { stdio: 'ignore' });
  } catch {
    t.skip('cannot mount a small tmpfs here (needs root); disk-full behaviour not exercised');
    return;
  }
  try {
    const dir = join(mnt, 'shard');
    const s = await DurableShard.create(dir, defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 }));
    let acked = 0;
    let failure: unknown = null;
    for (let b = 0; b < 200 && !failure; b++) {
      try {
        await addBatch(s, b, 100); // ~6.8 KB per batch
        acked++;
      } catch (err) {
        failure = err;
      }
    }
    assert.ok(failure instanceof StorageError, `expected StorageError, got ${String(failure)}`);
    assert.match((failure as Error).message, /free disk space/);
    await s.shard.idle();
    assert.equal(s.shard.info.total, acked * 100, 'nothing of the failed batch reached memory');
    const r1 = await s.shard.search(data.base(1, 0), 1, false);
    assert.equal(r1.labels[0], 0n);
    await s.close();
    const { shard: r, report } = await DurableShard.open(dir, null);
    assert.equal(r.shard.info.total, acked * 100, `restored ${r.shard.info.total}, acknowledged ${acked * 100}`);
    assert.deepEqual(report.skipped, []);
    await r.close();
  } finally {
    execFileSync('umount', [mnt]);
  }
});

test('idempotency keys: a retried batch is stored once, also across a restart and a snapshot', async () => {
  const dir = join(tmp(), 'shard');
  const s = await DurableShard.create(dir, defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 }));
  const { blob, offsets } = encodeMetadata(Array.from({ length: 10 }, (_, i) => [0, i]), 10);
  const v = data.base(10, 0);
  const [a, b] = await Promise.all([s.add(v, blob, offsets, { key: 'k1' }), s.add(v, blob, offsets, { key: 'k1' })]);
  assert.equal(a, b);
  assert.equal(await s.add(v, blob, offsets, { key: 'k1' }), a);
  assert.equal(s.shard.info.total, 10);
  await s.add(v, blob, offsets, { key: 'k2' });
  await s.shard.idle();
  await s.close();
  const { shard: r } = await DurableShard.open(dir, null); // keys come back from the WAL
  assert.equal(await r.add(v, blob, offsets, { key: 'k1' }), 0);
  assert.equal(r.shard.info.total, 20);
  await r.snapshot();
  await r.close();
  const { shard: r2 } = await DurableShard.open(dir, null); // and from the snapshot
  assert.equal(await r2.add(v, blob, offsets, { key: 'k2' }), 10);
  assert.equal(r2.shard.info.total, 20);
  await r2.close();
});

test('float16 batches are logged as float16 (half the log bytes) and replay to the same vectors', async () => {
  const dir = join(tmp(), 'shard');
  const flat = defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2', trainNum: 1 });
  const rows = 64;
  // Half-precision values that are exact: small integers / 4.
  const half = new Uint16Array(rows * dim);
  const wide = new Float32Array(rows * dim);
  for (let i = 0; i < half.length; i++) {
    const v = ((i * 7) % 64) / 4; // 0 .. 15.75
    wide[i] = v;
    half[i] = toHalf(v);
  }
  const measure = async (arrived: Uint16Array | undefined): Promise<number> => {
    rmSync(dir, { recursive: true, force: true });
    const s = await DurableShard.create(dir, flat);
    for (let b = 0; b < 4; b++) {
      const { blob, offsets } = encodeMetadata(Array.from({ length: rows }, (_, i) => [b, i]), rows);
      await s.add(wide.slice(), blob, offsets, arrived ? { arrived } : {});
    }
    await s.close(); // no snapshot: everything is in the log only
    return readdirSync(join(dir, 'wal')).reduce((a, f) => a + statSync(join(dir, 'wal', f)).size, 0);
  };
  const f32Bytes = await measure(undefined);
  const f16Bytes = await measure(half);
  assert.ok(f16Bytes < f32Bytes * 0.6, `float16 log ${f16Bytes} B vs float32 ${f32Bytes} B`);
  const { shard } = await DurableShard.open(dir, null);
  await shard.shard.idle();
  assert.equal(shard.shard.info.ntotal, 4 * rows);
  const back = await shard.shard.faissIndex!.reconstruct([3 * rows + 5]);
  assert.deepEqual([...back], [...wide.subarray(5 * dim, 6 * dim)], 'replayed float16 widens to the same values');
  await shard.close();
});

/** float32 -> IEEE half for values that are exact in half precision (test data only). */
function toHalf(v: number): number {
  if (v === 0) return 0;
  const e = Math.floor(Math.log2(v));
  const m = Math.round((v / 2 ** e - 1) * 1024);
  return ((e + 15) << 10) | m;
}

test('float16 waits for training as float16 (2 bytes a value): a crash, a snapshot and a mix with float32 restore and train exactly as the widened float32 would', async () => {
  const rows = 100;
  // Values exact in half precision (k / 64 in [0, 2)), so float16 and float32 input are the same vectors.
  const batch = (b: number): { half: Uint16Array; wide: Float32Array } => {
    const wide = data.base(rows, b * rows).map((v) => Math.min(127, Math.max(1, Math.round(Math.abs(v) * 64))) / 64);
    return { wide, half: Uint16Array.from(wide, toHalf) };
  };
  const meta = (b: number) => encodeMetadata(Array.from({ length: rows }, (_, i) => [b, i]), rows);
  const build = async (dir: string, f16: boolean): Promise<DurableShard> => {
    let s = await DurableShard.create(dir, cfg);
    for (let b = 0; b < 2; b++) await s.add(f16 ? batch(b).half : batch(b).wide, meta(b).blob, meta(b).offsets);
    assert.equal(s.shard.bufferedBytes, 2 * rows * dim * (f16 ? 2 : 4), 'waiting vectors take their input size');
    // A crash: the WAL replay buffers float16 as float16 again.
    ({ shard: s } = await DurableShard.open(dir, null));
    assert.equal(s.shard.bufferedBytes, 2 * rows * dim * (f16 ? 2 : 4), 'replayed vectors take their input size');
    const { blob, offsets } = meta(2);
    await s.add(f16 ? batch(2).half : batch(2).wide, blob, offsets);
    // Records read from the buffer come back widened.
    const got = await readRecords(s.shard, [5, 2 * rows + 7], true);
    assert.deepEqual([...got.vectors!.subarray(0, dim)], [...batch(0).wide.subarray(5 * dim, 6 * dim)]);
    assert.deepEqual([...got.vectors!.subarray(dim)], [...batch(2).wide.subarray(7 * dim, 8 * dim)]);
    // A snapshot of a float16 buffer is written as float32 (the on-disk format) and restores.
    await s.snapshot();
    await s.close();
    ({ shard: s } = await DurableShard.open(dir, null));
    assert.equal(s.shard.bufferedBytes, 3 * rows * dim * 4, 'a snapshot buffer comes back as float32');
    // float16 after float32 in the buffer: small batches are joined into chunks of either kind.
    for (let b = 3; b < 8; b++) {
      const { blob: bl, offsets: of } = meta(b);
      await s.add(f16 && b !== 5 ? batch(b).half : batch(b).wide, bl, of);
    }
    await s.shard.idle();
    assert.equal(s.shard.state, IndexState.TRAINED);
    assert.equal(s.shard.info.ntotal, 8 * rows);
    return s;
  };
  const half = await build(join(tmp(), 'shard'), true);
  const wide = await build(join(tmp(), 'shard'), false);
  const q = data.queries(5);
  const [a, b] = [await half.shard.search(q, 10, false), await wide.shard.search(q, 10, false)];
  assert.deepEqual(a.labels, b.labels, 'same training, same lists, same hits');
  assert.deepEqual(a.distances, b.distances);
  assert.deepEqual([...(await half.shard.faissIndex!.reconstruct([6 * rows + 3]))], [...batch(6).wide.subarray(3 * dim, 4 * dim)]);
  await half.close();
  await wide.close();
});

test('WAL segments a snapshot covers are deleted, the segment being written included; restore and later adds still work', async () => {
  const dir = join(tmp(), 'shard');
  const flat = defaultIndexCfg({ indexBuilderType: 'flat', dim, metric: 'l2' });
  const walBytes = (): number => readdirSync(join(dir, 'wal')).reduce((a, f) => a + statSync(join(dir, 'wal', f)).size, 0);
  const s = await DurableShard.create(dir, flat);
  for (let b = 0; b < 4; b++) await addBatch(s, b);
  assert.ok(walBytes() > 4 * 100 * dim * 4, 'the adds are in the log');
  await s.snapshot(); // the only snapshot: it covers the whole log, the open segment too
  assert.deepEqual(readdirSync(join(dir, 'wal')), [], 'no segment left behind');
  for (let b = 4; b < 6; b++) await addBatch(s, b); // a new segment
  await s.snapshot(); // two snapshots: the log is kept back to the older one (a damaged newest falls back to it)
  assert.equal(readdirSync(join(dir, 'wal')).length, 1, 'the segment after the older snapshot stays');
  await s.snapshot(); // the older snapshot now covers that segment too
  assert.deepEqual(readdirSync(join(dir, 'wal')), []);
  await addBatch(s, 6); // only in the log
  assert.equal(readdirSync(join(dir, 'wal')).length, 1);
  // a crash: the log is abandoned, not closed
  const { shard: r, report } = await DurableShard.open(dir, null);
  assert.equal(report.walRecords, 1);
  assert.deepEqual(report.skipped, []);
  assert.deepEqual([...batchesIn(r).entries()].sort((a, b) => a[0] - b[0]), Array.from({ length: 7 }, (_, b) => [b, 100]));
  await addBatch(r, 7);
  await r.close();
  const { shard: again } = await DurableShard.open(dir, null);
  await again.shard.idle();
  assert.equal(again.shard.info.ntotal, 800);
  await again.close();
});
