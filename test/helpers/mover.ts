/** Runs test/helpers/moving-client.ts against a cluster: resolves with how many batches it added before one moved, once it SIGKILLed itself. */
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';

const MOVER = new URL('./moving-client.ts', import.meta.url).pathname;

export async function runMovingClient(discovery: string, rows: number): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', MOVER, discovery, String(rows)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const signal = await new Promise((r) => child.on('exit', (_code, sig) => r(sig)));
  assert.equal(signal, 'SIGKILL', `the client killed itself after moving a batch (${out})`);
  const batches = Number(/moved (\d+)/.exec(out)?.[1]);
  assert.ok(batches >= 1, out);
  return batches;
}
