// A server whose log reader went away (a launcher's stderr pipe closed) must still stop on
// SIGTERM: pino's exit hook used to retry the broken pipe forever (SonicBoom's flushSync).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from '../helpers/cluster.js';
import { CHILD_ENV } from '../helpers/cli.js';

for (const closed of ['stderr', 'stdout and stderr'] as const) {
  test(`SIGTERM stops a server whose ${closed} reader is gone, with its last log line in flight`, { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dfaiss-sig-'));
    // info level: the "shutting down" line is written as the server exits.
    const proc = spawn(process.execPath, [CLI, 'server', '--rank', '0', '--port', '0', '--save-dir', join(dir, 'data')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...CHILD_ENV, DFAISS_LOG_LEVEL: 'info' } });
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        proc.stdout!.on('data', (d: Buffer) => {
          out += d;
          if (out.includes('"listening"')) resolve();
        });
        proc.once('exit', () => reject(new Error('the server exited before listening')));
      });
      proc.stderr!.destroy();
      if (closed !== 'stderr') proc.stdout!.destroy();
      const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
      const t0 = Date.now();
      proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
      assert.equal(code, 0, `exit code after SIGTERM (${Date.now() - t0} ms)`);
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
