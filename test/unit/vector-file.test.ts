// VectorFile: the loader's streaming readers, on files written here.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VectorFile } from '../../src/loader/vector-file.js';
import { toHalf, writeFvecs, writeNpy, writeRaw } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'dfaiss-vf-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const DIM = 5;
const N = 7;
const values = Float32Array.from({ length: N * DIM }, (_, i) => i / 4);

async function readAll(path: string, opts = {}): Promise<{ file: VectorFile; rows: number[][] }> {
  const file = await VectorFile.open(path, opts);
  const buf = file.allocate(3);
  const rows: number[][] = [];
  for (let start = 0; start < file.rows; start += 3) {
    const count = Math.min(3, file.rows - start);
    const got = await file.read(start, count, buf);
    for (let r = 0; r < count; r++) rows.push(Array.from(got.subarray(r * DIM, (r + 1) * DIM)));
  }
  await file.close();
  return { file, rows };
}

const expected = Array.from({ length: N }, (_, r) => Array.from(values.subarray(r * DIM, (r + 1) * DIM)));

test('fvecs, npy f32 and raw f32 read back in chunks through one reused buffer', async () => {
  writeFvecs(join(dir, 'a.fvecs'), values, DIM);
  writeNpy(join(dir, 'a.npy'), values, DIM);
  writeRaw(join(dir, 'a.f32'), values);
  for (const [name, opts] of [['a.fvecs', {}], ['a.npy', {}], ['a.f32', { dim: DIM }]] as const) {
    const { file, rows } = await readAll(join(dir, name), opts);
    assert.equal(file.rows, N, name);
    assert.equal(file.dim, DIM, name);
    assert.deepEqual(rows, expected, name);
  }
});

test('bvecs and uint8 .npy are widened to float32; float16 stays float16', async () => {
  const bytes = Uint8Array.from({ length: N * DIM }, (_, i) => (i * 7) % 256);
  const bvecs = Buffer.alloc(N * (4 + DIM));
  for (let r = 0; r < N; r++) {
    bvecs.writeInt32LE(DIM, r * (4 + DIM));
    bvecs.set(bytes.subarray(r * DIM, (r + 1) * DIM), r * (4 + DIM) + 4);
  }
  writeFileSync(join(dir, 'b.bvecs'), bvecs);
  const b = await readAll(join(dir, 'b.bvecs'));
  assert.equal(b.file.dtype, 'u8');
  assert.deepEqual(b.rows.flat(), Array.from(bytes));

  const header = `{'descr': '|u1', 'fortran_order': False, 'shape': (${N}, ${DIM}), }`.padEnd(117) + '\n';
  const npy = Buffer.concat([Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length, 0]), Buffer.from(header, 'latin1'), Buffer.from(bytes)]);
  writeFileSync(join(dir, 'u8.npy'), npy);
  assert.deepEqual((await readAll(join(dir, 'u8.npy'))).rows.flat(), Array.from(bytes));

  const half = Uint16Array.from(values, toHalf);
  writeRaw(join(dir, 'h.f16'), half);
  const h = await VectorFile.open(join(dir, 'h.f16'), { dim: DIM, fp16: true, rows: 4 });
  assert.equal(h.rows, 4);
  const got = await h.read(1, 2, h.allocate(2));
  assert.ok(got instanceof Uint16Array);
  assert.deepEqual(Array.from(got), Array.from(half.subarray(DIM, 3 * DIM)));
  await h.close();
});

test('bad files and flags give errors that say what is wrong', async () => {
  writeRaw(join(dir, 'odd.f32'), new Float32Array(11));
  await assert.rejects(VectorFile.open(join(dir, 'odd.f32'), { dim: DIM }), /invalid dim: .*44 bytes, not a multiple of 20/);
  await assert.rejects(VectorFile.open(join(dir, 'odd.f32')), /invalid dim: expected the vector dimension/);
  await assert.rejects(VectorFile.open(join(dir, 'a.npy'), { dim: 4 }), /invalid dim: expected 5, the dimension in the .npy header/);
  await assert.rejects(VectorFile.open(join(dir, 'a.npy'), { fp16: true }), /invalid fp16: .*<f4/);
  await assert.rejects(VectorFile.open(join(dir, 'a.fvecs'), { rows: 8 }), /invalid rows: expected at most the 7 rows/);
  await assert.rejects(VectorFile.open(join(dir, 'missing.npy')), /cannot read vector file/);
  const fortran = `{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }`.padEnd(117) + '\n';
  writeFileSync(join(dir, 'f.npy'), Buffer.concat([Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, fortran.length, 0]), Buffer.from(fortran), Buffer.alloc(4)]));
  await assert.rejects(VectorFile.open(join(dir, 'f.npy')), /Fortran-order/);
  // a row whose dimension header disagrees with the first row's
  const bad = Buffer.alloc(2 * (4 + 4 * DIM));
  bad.writeInt32LE(DIM, 0);
  bad.writeInt32LE(DIM + 1, 4 + 4 * DIM);
  writeFileSync(join(dir, 'bad.fvecs'), bad);
  const f = await VectorFile.open(join(dir, 'bad.fvecs'));
  await assert.rejects(f.read(0, 2, f.allocate(2)), /row 1 says dimension 6/);
  await assert.rejects(f.read(1, 2, f.allocate(2)), /invalid rows/);
  await f.close();
});
