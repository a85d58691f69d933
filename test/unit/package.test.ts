// What `npm pack` would publish (issue 18, item 3, in part): LICENSE and metadata, no bench
// or demo, source maps whose sources are in the package, and an exports map that works
// from require() as well as import on Node 20.19+.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;

test('npm pack --dry-run: LICENSE, repository and keywords; no bench or demo; every source map resolves inside the package', () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const files = new Set((JSON.parse(out) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path));
  for (const f of ['LICENSE', 'package.json', 'README.md', 'dist/index.js', 'dist/client.js', 'dist/cli/main.js', 'binding.gyp', 'scripts/setup.sh']) assert.ok(files.has(f), `${f} is published`);
  const unwanted = [...files].filter((f) => /^(dist|src)\/(bench|demo)\//.test(f) || f.startsWith('test/') || f.startsWith('build/'));
  assert.deepEqual(unwanted, [], 'no bench, demo, tests or build output');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { repository?: unknown; keywords?: string[]; license?: string };
  assert.ok(pkg.repository && pkg.keywords && pkg.keywords.length > 0 && pkg.license === 'MIT');
  const maps = [...files].filter((f) => f.endsWith('.js.map'));
  assert.ok(maps.length > 20);
  for (const m of maps) {
    const { sources } = JSON.parse(readFileSync(join(ROOT, m), 'utf8')) as { sources: string[] };
    for (const s of sources) assert.ok(files.has(normalize(join(dirname(m), s))), `${m} points at ${s}, which is published`);
  }
});

test("require('dfaiss') and require('dfaiss/client') work (exports map with a default condition)", () => {
  for (const entry of ['dfaiss', 'dfaiss/client']) {
    const r = spawnSync(process.execPath, ['-e', `const m = require(${JSON.stringify(entry)}); if (typeof m.IndexClient !== 'function') process.exit(3)`], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, `${entry}: ${r.stderr}`);
  }
});
