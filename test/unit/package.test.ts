// What `npm pack` would publish (issue 18, item 3) for both packages of the workspace:
// LICENSE and metadata, no bench or demo, source maps that resolve, an exports map that
// works from require() as well as import on Node 20.19+; the client package has no native
// code, and dfaiss takes its client modules from it (one copy of each class).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;
const CLIENT = join(ROOT, 'packages/client');

function packedFiles(cwd: string): Set<string> {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return new Set((JSON.parse(out) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path));
}

test('npm pack --dry-run: LICENSE, repository and keywords; no bench or demo; every source map resolves inside the package', () => {
  const files = packedFiles(ROOT);
  for (const f of ['LICENSE', 'package.json', 'README.md', 'dist/index.js', 'dist/client.js', 'dist/cli/main.js', 'binding.gyp', 'scripts/setup.sh']) assert.ok(files.has(f), `${f} is published`);
  const unwanted = [...files].filter((f) => /^(dist|src)\/(bench|demo)\//.test(f) || f.startsWith('test/') || f.startsWith('build/'));
  assert.deepEqual(unwanted, [], 'no bench, demo, tests or build output');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { repository?: unknown; keywords?: string[]; license?: string };
  assert.ok(pkg.repository && pkg.keywords && pkg.keywords.length > 0 && pkg.license === 'MIT');
  assert.ok(![...files].some((f) => f.startsWith('packages/')), 'the client package is published on its own');
  const maps = [...files].filter((f) => f.endsWith('.js.map'));
  assert.ok(maps.length > 20);
  for (const m of maps) {
    const { sources } = JSON.parse(readFileSync(join(ROOT, m), 'utf8')) as { sources: string[] };
    for (const s of sources) assert.ok(files.has(normalize(join(dirname(m), s))), `${m} points at ${s}, which is published`);
  }
});

test("require('dfaiss'), require('dfaiss/client') and require('@dfaiss/client') work (exports map with a default condition)", () => {
  for (const entry of ['dfaiss', 'dfaiss/client', '@dfaiss/client']) {
    const r = spawnSync(process.execPath, ['-e', `const m = require(${JSON.stringify(entry)}); if (typeof m.IndexClient !== 'function') process.exit(3)`], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, `${entry}: ${r.stderr}`);
  }
});

test('@dfaiss/client: npm pack --dry-run holds the client modules only (no native code, server, CLI, bench or demo), LICENSE, maps with their sources inline', () => {
  const files = packedFiles(CLIENT);
  for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/client.js', 'dist/client.d.ts', 'dist/client/index-client.js', 'dist/protocol/rpc-client.js', 'dist/discovery/discovery-file.js', 'dist/errors.js']) assert.ok(files.has(f), `${f} is published`);
  const unwanted = [...files].filter((f) => !/^(LICENSE|README\.md|package\.json|dist\/.*\.(js|d\.ts|js\.map))$/.test(f) || /^dist\/((native|server|cli|launch|loader|dashboard|bench|demo|datasets)\/|shard\/(?!records|state))/.test(f));
  assert.deepEqual(unwanted, [], 'nothing but the client modules');
  const pkg = JSON.parse(readFileSync(join(CLIENT, 'package.json'), 'utf8')) as { scripts?: Record<string, string>; gypfile?: boolean; dependencies?: Record<string, string>; license?: string; repository?: unknown; keywords?: string[] };
  assert.ok(!pkg.gypfile && !Object.keys(pkg.scripts ?? {}).some((s) => /install/.test(s)), 'no install script, no node-gyp');
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}).sort(), ['msgpackr', 'zod']);
  assert.ok(pkg.repository && pkg.keywords && pkg.license === 'MIT');
  for (const m of [...files].filter((f) => f.endsWith('.js.map'))) {
    const { sources, sourcesContent } = JSON.parse(readFileSync(join(CLIENT, m), 'utf8')) as { sources: string[]; sourcesContent?: string[] };
    assert.equal(sourcesContent?.length, sources.length, `${m} carries its sources`);
  }
});

test('dfaiss depends on @dfaiss/client and takes its client modules from it: one copy of each class', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const client = JSON.parse(readFileSync(join(CLIENT, 'package.json'), 'utf8')) as { version: string };
  assert.equal(pkg.dependencies['@dfaiss/client'], client.version);
  for (const rel of ['errors.js', 'protocol/frame.js', 'client/index-client.js', 'client.js']) {
    assert.match(readFileSync(join(ROOT, 'dist', rel), 'utf8'), /^export \* from '@dfaiss\/client(\/internal\/[\w/-]+\.js)?';$/m, `dist/${rel} re-exports the client package`);
  }
  // An error thrown by the full package's own code (the FAISS binding's validation) is an
  // instance of the class '@dfaiss/client' exports.
  const code = `const d = require('dfaiss'), c = require('@dfaiss/client'), dc = require('dfaiss/client');
if (d.IndexClient !== c.IndexClient || dc.ValidationError !== c.ValidationError) process.exit(3);
try { d.FaissIndex.fromFactory(0, 'Flat', 'l2'); process.exit(4); } catch (e) { if (!(e instanceof c.ValidationError)) process.exit(5); }`;
  const r = spawnSync(process.execPath, ['-e', code], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});
