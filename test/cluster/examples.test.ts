// The README's example must run as written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

test('examples/quickstart.ts (the README client example) runs and finds its query', () => {
  const root = new URL('../..', import.meta.url).pathname;
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'examples/quickstart.ts'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /ntotal 2000/);
  assert.match(r.stdout, /doc: 'doc-1234'/);
});
