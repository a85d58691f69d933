/**
 * What idle `dfaiss server` processes cost before any data (issue 15, item 3): starts R ranks
 * as R / K processes (`dfaiss server --ranks-per-process K`) for each K asked, waits until
 * they listen and have answered one status call, then reads every process's
 * /proc/PID/smaps_rollup (RSS, PSS, private = Private_Clean + Private_Dirty) and thread count.
 * Not timed: it measures memory only, so it runs on a busy machine too.
 *
 *   node dist/bench/server-memory.js --ranks 32 --per-process 1,8,16,32 [--cli path/to/cli/main.js] [--node-flag=--max-semi-space-size=1]
 *
 * --cli measures another build (e.g. main's dist/ for a before/after); --per-process 1 then
 * starts plain `dfaiss server` processes (no --ranks-per-process flag).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexClient } from '../../dist/client/index-client.js';
import { waitForListeningEvents } from '../../dist/launch/listening.js';

interface ProcMemory {
  rss: number;
  pss: number;
  private: number;
  anon: number;
  threads: number;
}

function readProc(pid: number): ProcMemory {
  const roll = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(roll)?.[1] ?? NaN) / 1024;
  const threads = Number(/^Threads:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return { rss: kb('Rss'), pss: kb('Pss'), private: kb('Private_Clean') + kb('Private_Dirty'), anon: kb('Anonymous'), threads };
}

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const ranks = Number(arg('--ranks', '32'));
const perProcessList = arg('--per-process', '1,8,16,32').split(',').map(Number);
const cli = arg('--cli', new URL('../../dist/cli/main.js', import.meta.url).pathname);
const nodeFlags = process.argv.filter((a) => a.startsWith('--node-flag=')).map((a) => a.slice('--node-flag='.length));

const rows: Array<Record<string, number | string>> = [];
for (const k of perProcessList) {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-mem-'));
  const discovery = join(dir, 'discovery.txt');
  writeFileSync(discovery, `${ranks}\n`);
  const procs: ChildProcess[] = [];
  try {
    for (let first = 0; first < ranks; first += k) {
      const count = Math.min(k, ranks - first);
      const multi = k === 1 ? [] : ['--ranks-per-process', String(count)];
      const proc = spawn(process.execPath, [...nodeFlags, cli, 'server', '--rank', String(first), ...multi, '--port', '0', '--save-dir', join(dir, 'data'), '--discovery-config', discovery, '--threads', '1'], {
        stdio: ['ignore', 'pipe', 'ignore'],
        env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE', DFAISS_LOG_LEVEL: 'warn' },
      });
      procs.push(proc);
      await waitForListeningEvents(proc, count, { timeoutMs: 120_000, label: `ranks ${first}+` });
    }
    // One client connection and status call per rank, as a cluster right after start sees.
    const client = await IndexClient.connect(discovery, { discoveryTimeoutMs: 30_000 });
    await client.status();
    await client.close();
    await new Promise((r) => setTimeout(r, 1500));
    const mem = procs.map((p) => readProc(p.pid!));
    const sum = (f: keyof ProcMemory): number => mem.reduce((a, m) => a + m[f], 0);
    rows.push({
      ranksPerProcess: k,
      processes: procs.length,
      rssTotalMiB: +sum('rss').toFixed(1),
      pssTotalMiB: +sum('pss').toFixed(1),
      privateTotalMiB: +sum('private').toFixed(1),
      rssPerRankMiB: +(sum('rss') / ranks).toFixed(2),
      pssPerRankMiB: +(sum('pss') / ranks).toFixed(2),
      rssPerProcessMiB: +(sum('rss') / procs.length).toFixed(1),
      threadsTotal: sum('threads'),
    });
    console.error(JSON.stringify(rows.at(-1)));
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.exitCode === null ? new Promise((r) => p.once('exit', r)) : null)));
    rmSync(dir, { recursive: true, force: true });
  }
}
console.log(JSON.stringify({ ranks, cli, nodeFlags, rows }, null, 2));
