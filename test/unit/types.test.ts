// Type-level tests (test/types/*.ts), compiled with tsc: a wrong type, or an expected-error
// directive on a line that compiles, fails the build and so this test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

test('client.index<M>(id) carries the metadata type through search, get, iterate, filters and adds', { timeout: 120_000 }, () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const root = new URL('../..', import.meta.url).pathname;
  const r = spawnSync(process.execPath, [tsc, '-p', 'test/types/tsconfig.json'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `tsc on test/types failed:\n${r.stdout}${r.stderr}`);
});
