// Records bookkeeping (src/shard/records.ts) and its WAL records (format 4), without servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, openSync, rmSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ValidationError } from '../../src/errors.js';
import { Records, checkRecordIds } from '../../src/shard/records.js';
import { WriteAheadLog, replayWal, type WalRecord } from '../../src/shard/wal.js';
import { homeOf, fnv1a32, splitByHome } from '../../src/client/records.js';

test('ids: strings and safe integers; duplicates in a batch are refused naming the second', () => {
  assert.deepEqual(checkRecordIds(['a', 7, -3], 'ids', { unique: true }), ['a', 7, -3]);
  assert.throws(() => checkRecordIds(['a', 'b', 'a'], 'ids', { unique: true }), (e: unknown) => e instanceof ValidationError && /ids\[2\]/.test(e.message) && /ids\[0\]/.test(e.message));
  assert.deepEqual(checkRecordIds([7, '7'], 'ids', { unique: true }), [7, '7'], '7 and "7" are different ids');
  for (const bad of [1.5, NaN, 2 ** 60, '', 'x'.repeat(513), null, {}, true]) assert.throws(() => checkRecordIds([bad], 'ids', { unique: false }), ValidationError, String(bad));
  assert.throws(() => checkRecordIds(['a'], 'ids', { unique: true, n: 2 }), /one id per vector/);
});

test('upsert keeps the old version visible until the new one is indexed; delete kills the whole chain', () => {
  const r = new Records();
  r.put(0, ['a', 'b', 'c']);
  r.indexed(0, 3);
  r.put(3, ['b']); // b v2, buffered
  assert.equal(r.lookup('b'), 3);
  assert.ok(!r.isDead(1), 'old b still visible while the new one is buffered');
  assert.ok(!r.isCurrent(1) && r.isCurrent(3));
  r.put(4, ['b']); // b v3
  r.indexed(3, 4);
  assert.ok(r.isDead(1) && !r.isDead(3), 'v1 dies when v2 is indexed');
  r.delete(['b'], 4);
  assert.ok(r.isDead(3) && r.isDead(4), 'delete kills v2 and the buffered v3');
  assert.deepEqual(r.delete(['b', 'zz'], 5), { deleted: [], unknown: ['b', 'zz'] });
  r.indexed(4, 5);
  assert.deepEqual([...r.toRemove].sort(), [1, 3, 4], 'every dead indexed id awaits compaction once');
  assert.equal(r.deadIndexed, 3);
});

test('Flat compaction remaps FAISS positions; adds after it append to the map; a snapshot round-trips', () => {
  const r = new Records();
  r.put(0, [10, 11, 12, 13, 14, 15]);
  r.indexed(0, 6);
  r.delete([11, 14], 6);
  const labels = r.labelsToRemove(r.toRemove.length, true, 6);
  assert.deepEqual([...labels], [1n, 4n]);
  r.removed(2, true, 6);
  assert.deepEqual([0, 1, 2, 3].map((p) => r.internalOf(p)), [0, 2, 3, 5]);
  r.put(6, [16]);
  r.indexed(6, 7);
  assert.equal(r.internalOf(4), 6);
  assert.equal(r.labelOf(5, 7), 3);
  assert.equal(r.labelOf(1, 7), -1);
  r.delete([12], 7);
  assert.deepEqual([...r.labelsToRemove(1, true, 7)], [1n]);
  const cut = r.cut(7);
  const back = Records.restore({ mode: cut.mode, ids: cut.ids(), dead: cut.dead, remap: cut.remap }, 7, 7, () => false);
  assert.deepEqual([10, 11, 12, 13, 14, 15, 16].map((id) => back.lookup(id)), [0, undefined, undefined, 3, undefined, 5, 6]);
  assert.deepEqual(back.toRemove, [2], 'the dead id still in FAISS awaits compaction after a restore');
  assert.equal(back.internalOf(4), 6);
  // A buffered replacement at the cut stays a replacement after the restore.
  const u = new Records();
  u.put(0, ['x']);
  u.indexed(0, 1);
  u.put(1, ['x']);
  const c2 = u.cut(2);
  const b2 = Records.restore({ mode: c2.mode, ids: c2.ids(), dead: c2.dead, remap: c2.remap }, 2, 1, () => false);
  assert.ok(!b2.isDead(0) && b2.lookup('x') === 1);
  b2.indexed(1, 2);
  assert.ok(b2.isDead(0));
});

test('mixing batches with and without ids is refused; adds of stored or in-flight ids are refused, upserts are not', () => {
  const r = new Records();
  r.check(['a'], false, new Set());
  r.put(0, ['a']);
  assert.throws(() => r.check(undefined, false, new Set()), /stores records with ids/);
  assert.throws(() => r.check(['a'], false, new Set()), /1 stored already/);
  assert.throws(() => r.check(['q'], false, new Set(['q'])), /stored already/);
  r.check(['a'], true, new Set());
  const anon = new Records();
  anon.putAnonymous();
  assert.throws(() => anon.check(['a'], true, new Set()), /stores vectors without ids/);
  assert.throws(() => new Records().check(undefined, false, new Set(), 'ids'), /stores records with ids/, 'a batch with ids being logged decides');
});

test('home placement: stable FNV-1a over typed keys, spread over servers', () => {
  assert.equal(fnv1a32(''), 0x811c9dc5);
  assert.equal(fnv1a32('a'), 0xe40c292c);
  assert.notEqual(homeOf(7, 1000), homeOf('7', 1000));
  const counts = new Array(4).fill(0);
  for (let i = 0; i < 4000; i++) counts[homeOf(`doc-${i}`, 4)]++;
  assert.ok(counts.every((c) => c > 800), JSON.stringify(counts));
  const servers = [{ rank: 1 }, { rank: 0 }] as never;
  const parts = splitByHome([1, 2, 3, 4, 5], servers);
  for (const [pos, rows] of parts) for (const row of rows) assert.equal((servers as Array<{ rank: number }>)[pos]!.rank, homeOf(row + 1, 2));
});

test('WAL format 4: adds with ids (float32 and float16) and deletes replay exactly; a torn tail is skipped', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-walrec-'));
  try {
    const wal = await WriteAheadLog.open(dir, 'fsync', 0);
    const vec = Float32Array.from([1, 2, 3, 4, 5, 6]);
    await wal.append({ vectors: vec, dim: 3, blob: Uint8Array.of(0xc0, 0xc0), offsets: Uint32Array.of(0, 1, 2), key: 'k1', ids: ['a', 2 ** 40] }, () => undefined);
    await wal.append({ vectors: Uint16Array.of(0x3c00, 0, 0), dim: 3, blob: Uint8Array.of(0xc0), offsets: Uint32Array.of(0, 1), key: '', ids: ['f16'] }, () => undefined);
    await wal.appendDelete(['a', 'nope'], () => undefined);
    await wal.append({ vectors: vec.subarray(0, 3), dim: 3, blob: Uint8Array.of(0xc0), offsets: Uint32Array.of(0, 1), key: '' }, () => undefined);
    await wal.close();
    const got: WalRecord[] = [];
    const rep = await replayWal(dir, 0, (r) => got.push(r));
    assert.equal(rep.records, 4);
    assert.deepEqual(got.map((r) => [r.type, r.ids]), [['add', ['a', 2 ** 40]], ['add', ['f16']], ['delete', ['a', 'nope']], ['add', undefined]]);
    assert.deepEqual([...(got[0]!.vectors as Float32Array)], [...vec]);
    assert.deepEqual([...got[0]!.offsets], [0, 1, 2]);
    assert.equal(got[0]!.key, 'k1');
    assert.ok(got[1]!.vectors instanceof Uint16Array);
    // Tear the last record: the first three replay, the tail is reported.
    const { readdirSync, statSync, truncateSync } = await import('node:fs');
    const seg = join(dir, readdirSync(dir)[0]!);
    truncateSync(seg, statSync(seg).size - 9);
    const again: WalRecord[] = [];
    const rep2 = await replayWal(dir, 0, (r) => again.push(r));
    assert.equal(again.length, 3);
    assert.equal(rep2.skipped.length, 1);
    // A corrupt ids section fails its checksum, not the process.
    const fd = openSync(seg, 'r+');
    writeSync(fd, Buffer.from([0xff, 0xff]), 0, 2, 16 + 48 + 8);
    closeSync(fd);
    const after: WalRecord[] = [];
    const rep3 = await replayWal(dir, 0, (r) => after.push(r));
    assert.equal(after.length, 0);
    assert.match(rep3.skipped[0]!, /checksum/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('WAL: segments of formats 1-3 (no records with ids) are still read; a newer format is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-walold-'));
  try {
    const wal = await WriteAheadLog.open(dir, 'fsync', 0);
    await wal.append({ vectors: Float32Array.from([1, 2]), dim: 2, blob: Uint8Array.of(0xc0), offsets: Uint32Array.of(0, 1), key: 'old' }, () => undefined);
    await wal.close();
    const { readdirSync } = await import('node:fs');
    const seg = join(dir, readdirSync(dir)[0]!);
    const setVersion = (v: number): void => {
      const fd = openSync(seg, 'r+');
      const b = Buffer.alloc(4);
      b.writeUInt32LE(v, 0);
      writeSync(fd, b, 0, 4, 4);
      closeSync(fd);
    };
    for (const v of [1, 2, 3]) {
      setVersion(v);
      const got: WalRecord[] = [];
      await replayWal(dir, 0, (r) => got.push(r));
      assert.deepEqual(got.map((r) => [r.type, r.key, r.ids]), [['add', 'old', undefined]], `format ${v}`);
    }
    setVersion(5);
    await assert.rejects(replayWal(dir, 0, () => {}), /WAL format 5 is newer/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
