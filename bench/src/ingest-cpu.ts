/**
 * CPU per step of one add on the original's workload (issue 14): a 10,000 x 128 uniform
 * batch with String(row) metadata, every step the client and a server run on their main
 * thread, timed in this process (CPU time, so other processes' load matters little):
 *
 *   node bench/dist/ingest-cpu.js [--reps N]
 *
 * Prints ms per batch and per 500k vectors (50 batches). FAISS's add and the fdatasync run
 * off the main thread and are measured by the --original bench, not here.
 */
import { toMatrix as clientToMatrix } from '../../dist/vectors.js';
import { fp16ToFp32, toMatrix as serverToMatrix } from '../../dist/native/index.js';
import { encodeFrame } from '../../dist/protocol/frame.js';
import { encodeMetadata, offsetsBytes, validateMetadata } from '../../dist/protocol/metadata.js';
import { crc32Update } from '../../dist/shard/crc.js';
import { prng } from '../../dist/util/random.js';

const rows = 10_000;
const dim = 128;
const at = process.argv.indexOf('--reps');
const reps = at > 0 ? Number(process.argv[at + 1]) : 30;
const r = prng(14);
const vectors = Float32Array.from({ length: rows * dim }, () => r());
const meta = Array.from({ length: rows }, (_, i) => String(250_000 + i));
const enc = encodeMetadata(meta, rows);

const cpuMs = (fn: () => unknown): number => {
  for (let i = 0; i < 5; i++) fn();
  const t0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) fn();
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / 1000 / reps;
};

// A fresh view per call: toMatrix remembers the arrays it checked (and would skip the scan).
const steps: Array<[string, () => unknown]> = [
  ['client: finite check (toMatrix)', () => clientToMatrix(vectors.subarray(0), dim, 'vectors')],
  ['client: encodeMetadata (String(row))', () => encodeMetadata(meta, rows)],
  ['client: encodeFrame', () => encodeFrame({ v: 1, id: 1, method: 'addIndexData', args: { indexId: 'x', n: rows, key: 'k' } }, [vectors, enc.blob, offsetsBytes(enc.offsets)])],
  ['server: validateMetadata', () => validateMetadata(enc.blob, enc.offsets, rows)],
  ['server: finite check (native)', () => serverToMatrix(vectors.subarray(0), dim, 'vectors')],
  ['server: blob + offsets copies', () => [enc.blob.slice(), enc.offsets.slice()]],
  ['server: WAL crc32c of the record', () => crc32Update(crc32Update(0, new Uint8Array(vectors.buffer)), enc.blob)],
  ['server: fp16 -> fp32 (if sent as f16)', () => fp16ToFp32(new Uint16Array(rows * dim))],
];
let total = 0;
for (const [name, fn] of steps) {
  const ms = cpuMs(fn);
  if (name.startsWith('client') || name.startsWith('server: v') || name.startsWith('server: fi') || name.startsWith('server: b') || name.startsWith('server: W')) total += ms;
  console.log(`${ms.toFixed(3).padStart(8)} ms/batch ${(ms * 50).toFixed(1).padStart(8)} ms/500k  ${name}`);
}
console.log(`${total.toFixed(3).padStart(8)} ms/batch ${(total * 50).toFixed(1).padStart(8)} ms/500k  main-thread total (float32 path)`);
