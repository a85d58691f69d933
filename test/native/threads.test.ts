// FAISS threads per index (issue 15, item 3: ranks sharing a process keep their own thread
// counts): FaissIndex.setThreads reaches OpenMP on the worker thread that runs the job.
// Observed through the process's thread count in a fresh child with one libuv worker, so
// every job runs on the same thread and OpenMP's team for it only grows when asked for more.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const INDEX = new URL('../../src/native/index.ts', import.meta.url).href;

const script = `
import { readFileSync } from 'node:fs';
const { FaissIndex, setOmpNumThreads } = await import(${JSON.stringify(INDEX)});
const threads = () => Number(/Threads:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
setOmpNumThreads(1);
const dim = 32, n = 20000;
const x = Float32Array.from({ length: n * dim }, (_, i) => Math.sin(i));
const q = x.subarray(0, 200 * dim);
const a = FaissIndex.fromFactory(dim, 'Flat', 'l2');
await a.add(x);
const out = [threads()];
await a.search(q, 5); out.push(threads());      // the process-wide 1 thread
a.setThreads(3); await a.search(q, 5); out.push(threads());  // this index: 3
const b = FaissIndex.fromFactory(dim, 'Flat', 'l2');
await b.add(x);
await b.search(q, 5); out.push(threads());      // another index keeps the process-wide count
a.setThreads(0); await a.search(q, 5); out.push(threads());  // back to the process-wide count
let bad = ''; try { a.setThreads(-1); } catch (e) { bad = e.name; }
console.log(JSON.stringify({ out, bad }));
`;

test('setThreads: an index runs its FAISS jobs with its own OpenMP thread count; others keep the process-wide one', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, UV_THREADPOOL_SIZE: '1', OMP_WAIT_POLICY: 'PASSIVE', OMP_NUM_THREADS: '1' },
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const { out, bad } = JSON.parse(r.stdout.trim()) as { out: number[]; bad: string };
  const [start, one, three, other, back] = out as [number, number, number, number, number];
  assert.equal(one, start, 'one thread: OpenMP starts no team');
  assert.equal(three, one + 2, 'three threads: a team of 3 on the worker');
  assert.equal(other, three, 'the other index did not ask for more');
  assert.equal(back, three, 'threads 0: the process-wide count (OpenMP keeps its idle team)');
  assert.equal(bad, 'ValidationError');
});
