// `dfaiss load` end to end: files written here, a real 2-server local cluster, the built CLI.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient } from '../../src/index.js';
import { LocalCluster } from '../../src/launch/local.js';
import { VectorFile } from '../../src/loader/vector-file.js';
import { SyntheticDataset } from '../../src/datasets/synthetic.js';
import { CLI } from '../helpers/cluster.js';
import { CHILD_ENV, collect, runCli, toHalf, writeFvecs, writeNpy, writeRaw } from '../helpers/cli.js';

const DIM = 16;
let dir: string;
let cluster: LocalCluster;
let client: IndexClient;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dfaiss-loader-'));
  cluster = new LocalCluster({ numServers: 2, saveDir: join(dir, 'data'), discoveryConfig: join(dir, 'discovery.txt'), threadsPerServer: 1, serverLogs: 'capture', serverLogLevel: 'warn' });
  await cluster.start();
  client = await IndexClient.connect(cluster.discoveryConfig, { discoveryTimeoutMs: 5000 });
  writeFileSync(join(dir, 'flat.json'), JSON.stringify({ dim: String(DIM), index_builder_type: 'flat', metric: 'l2' }));
  // The original's style: numbers as strings, snake_case, extra keys.
  writeFileSync(join(dir, 'ivf.json'), JSON.stringify({ dim: String(DIM), index_builder_type: 'ivf_simple', centroids: '8', train_num: '400', metric: 'l2', nprobe: '8', code_size: 64 }));
});

after(async () => {
  await client?.close();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function data(n: number, seed: number): Float32Array {
  return new SyntheticDataset({ dim: DIM, seed }).base(n);
}

/** Values exactly representable in float16 (multiples of 1/256 in [-2, 2)), so fp16 and fp32 files hold the same vectors. */
function halfExact(n: number, seed: number): { f32: Float32Array; f16: Uint16Array } {
  const src = data(n, seed);
  const f32 = src.map((v) => Math.round(Math.max(-2, Math.min(1.99, v)) * 256) / 256);
  return { f32, f16: Uint16Array.from(f32, toHalf) };
}

async function load(args: string[]) {
  const r = await runCli(['load', '--discover', cluster.discoveryConfig, '--json', '--progress-interval', '0', ...args]);
  assert.equal(r.code, 0, `dfaiss load ${args.join(' ')}\n${r.stderr}`);
  return { ...r, summary: JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown> };
}

/** Each row's own vector finds its row number first. */
async function checkRowsFindThemselves(indexId: string, vectors: Float32Array, rows: number[]): Promise<void> {
  const queries = new Float32Array(rows.length * DIM);
  rows.forEach((row, i) => queries.set(vectors.subarray(row * DIM, (row + 1) * DIM), i * DIM));
  const r = await client.search(indexId, queries, 1);
  assert.deepEqual(r.metadata.map((m) => m[0]), rows);
}

test('.fvecs into an IVF index (original-style cfg JSON): trains itself, ntotal exact, hits map back to rows', async () => {
  const vectors = data(2000, 1);
  writeFvecs(join(dir, 'a.fvecs'), vectors, DIM);
  const { summary, stderr } = await load(['--mmap', join(dir, 'a.fvecs'), '--cfg', join(dir, 'ivf.json'), '--index-id', 'fv', '--bs', '150']);
  assert.equal(summary.rowsLoaded, 2000);
  assert.equal(summary.ntotal, 2000);
  assert.equal(summary.state, 'TRAINED');
  assert.equal(summary.saved, true);
  assert.equal(summary.syncTrainCalled, false, 'train_num=400 per server was reached');
  // not a TTY: plain progress lines with rate and ETA
  assert.match(stderr, /load: \d+\/2000 vectors \(\d+\.\d%\), [\d,]+ vectors\/s, ETA \S+/);
  assert.match(stderr, /load: 2000\/2000 vectors \(100\.0%\)/);
  assert.equal(await client.getNtotal('fv'), 2000);
  await checkRowsFindThemselves('fv', vectors, [0, 777, 1999]);
});

test('.npy float16 and float32, and a raw float16 file (--dstore-fp16, --mmap-size): same vectors, same answers', async () => {
  const { f32, f16 } = halfExact(1000, 2);
  writeNpy(join(dir, 'h.npy'), f16, DIM);
  writeNpy(join(dir, 'f.npy'), f32, DIM);
  writeRaw(join(dir, 'h.mmap'), f16);
  const h = await VectorFile.open(join(dir, 'h.npy'));
  assert.deepEqual([h.format, h.dtype, h.rows, h.dim], ['npy', 'f16', 1000, DIM]);
  await h.close();

  const a = await load(['--mmap', join(dir, 'h.npy'), '--cfg', join(dir, 'flat.json'), '--index-id', 'h16', '--bs', '128']);
  const b = await load(['--mmap', join(dir, 'f.npy'), '--cfg', join(dir, 'flat.json'), '--index-id', 'f32', '--bs', '128']);
  const c = await load(['--mmap', join(dir, 'h.mmap'), '--dstore-fp16', '--dimension', String(DIM), '--mmap-size', '900', '--cfg', join(dir, 'flat.json'), '--index-id', 'raw16']);
  assert.equal(a.summary.ntotal, 1000);
  assert.equal(b.summary.ntotal, 1000);
  assert.equal(c.summary.ntotal, 900, '--mmap-size limits the rows');
  assert.equal(a.summary.syncTrainCalled, false, 'flat with train_num 0 needs no training: TRAINED from creation (issue 12)');
  const q = f32.subarray(500 * DIM, 503 * DIM);
  const [ra, rb, rc] = await Promise.all(['h16', 'f32', 'raw16'].map((id) => client.search(id, q, 3)));
  assert.deepEqual(ra!.metadata, rb!.metadata);
  assert.deepEqual(ra!.scores, rb!.scores, 'fp16 was widened exactly');
  assert.deepEqual(rc!.metadata, rb!.metadata);
  assert.deepEqual(ra!.metadata.map((m) => m[0]), [500, 501, 502]);
});

test('resume: --limit then --load-index --start adds every row exactly once; SIGINT stops cleanly and names the --start to resume', async (t) => {
  const vectors = data(3000, 3);
  writeFvecs(join(dir, 'r.fvecs'), vectors, DIM);
  const cfg = ['--cfg', join(dir, 'flat.json'), '--mmap', join(dir, 'r.fvecs')];
  const first = await load([...cfg, '--index-id', 'res', '--limit', '1234', '--bs', '100']);
  assert.equal(first.summary.resumeRow, 1234);
  // The second run as after a restart: --load-index and the saved config (no --cfg).
  const second = await load(['--mmap', join(dir, 'r.fvecs'), '--load-index', '--index-id', 'res', '--start', '1234', '--bs', '100', '--append']);
  assert.equal(second.summary.rowsLoaded, 3000 - 1234);
  assert.equal(await client.getNtotal('res'), 3000);
  assert.equal((await client.getIds('res')).size, 3000, 'no row twice');

  // Interrupted for real: SIGINT once the first progress line appears.
  const args = [CLI, 'load', '--discover', cluster.discoveryConfig, ...cfg, '--index-id', 'intr', '--bs', '10', '--json', '--progress-interval', '0', '--in-flight', '2'];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: CHILD_ENV });
  const done = collect(proc, 60_000, args);
  await new Promise<void>((resolve) => {
    const onData = (d: Buffer): void => {
      if (/vectors\/s/.test(d.toString())) {
        proc.stderr!.off('data', onData);
        proc.kill('SIGINT');
        resolve();
      }
    };
    proc.stderr!.on('data', onData);
    proc.once('exit', () => resolve());
  });
  const r = await done;
  const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { interrupted: boolean; resumeRow: number; rowsLoaded: number };
  t.diagnostic(s.interrupted ? `interrupted at row ${s.resumeRow}` : 'the load finished before SIGINT landed');
  if (s.interrupted) {
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /interrupted/);
    assert.ok(s.resumeRow > 0 && s.resumeRow < 3000);
    assert.equal(s.rowsLoaded, s.resumeRow);
    await load([...cfg, '--index-id', 'intr', '--start', String(s.resumeRow), '--bs', '500', '--append']);
  } else {
    assert.equal(r.code, 0, r.stderr); // finished before the signal landed: nothing to resume
  }
  assert.equal(await client.getNtotal('intr'), 3000);
  assert.equal((await client.getIds('intr')).size, 3000);
});

test('bad input: errors name the flag', async () => {
  writeRaw(join(dir, 'odd.bin'), new Float32Array(100)); // 400 bytes
  const run = (args: string[]) => runCli(['load', '--discover', cluster.discoveryConfig, ...args]);
  let r = await run(['--mmap', join(dir, 'odd.bin'), '--dimension', '7', '--cfg', join(dir, 'flat.json')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--dimension 7 disagrees with "dim": 16/);
  writeFileSync(join(dir, 'dim7.json'), JSON.stringify({ dim: 7, index_builder_type: 'flat' }));
  r = await run(['--mmap', join(dir, 'odd.bin'), '--cfg', join(dir, 'dim7.json')]);
  // The dimension came from the cfg file, not from a --dimension the user never gave.
  assert.match(r.stderr, new RegExp(`invalid "dim": 7 in ${join(dir, 'dim7.json')}: .*not a multiple of 28 .*check "dim": 7 in`));
  r = await run(['--mmap', join(dir, 'a.fvecs'), '--cfg', join(dir, 'dim7.json')]);
  assert.match(r.stderr, new RegExp(`invalid "dim": 7 in ${join(dir, 'dim7.json')}: expected 16, the dimension in the first row`));
  assert.doesNotMatch(r.stderr, /--dimension/);
  r = await run(['--mmap', join(dir, 'a.fvecs')]);
  assert.match(r.stderr, /--cfg <file> is required/);
  r = await run(['--mmap', join(dir, 'a.fvecs'), '--cfg', join(dir, 'flat.json'), '--bs', '0']);
  assert.match(r.stderr, /--bs expects an integer from 1/);
  r = await run(['--mmap', join(dir, 'a.fvecs'), '--cfg', join(dir, 'flat.json'), '--start', '5000', '--index-id', 'x']);
  assert.match(r.stderr, /invalid --start: expected a row from 0 to 2000/);
  r = await run(['--mmap', join(dir, 'h.npy'), '--dstore-fp16', '--mmap-size', '5000', '--cfg', join(dir, 'flat.json')]);
  assert.match(r.stderr, /invalid --mmap-size: expected at most the 1000 rows/);
});
