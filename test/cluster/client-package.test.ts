// The client-only package (issue 18, item 3): `npm pack` of packages/client, installed from
// its tarball into an empty project, offline (its runtime dependencies are packed from the
// root node_modules too, optional ones left out), then run where no native code can load
// and neither dfaiss nor FAISS can be resolved: it creates, fills and searches an index on a
// live cluster of full-package servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startCluster } from '../helpers/cluster.js';
import { collect } from '../helpers/cli.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const CLIENT_DIR = join(ROOT, 'packages/client');
const NO_NATIVE = new URL('../helpers/no-native.mjs', import.meta.url).pathname;
// npm's own entry script, run by this node: the child's PATH then needs nothing but node.
const NPM_CLI = join(dirname(realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim())), 'npm-cli.js');

/** `npm pack` of a folder into dest; returns the tarball's path. */
function pack(folder: string, dest: string): string {
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest, folder], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return join(dest, (JSON.parse(out) as Array<{ filename: string }>)[0]!.filename);
}

/** The client package's runtime dependencies (transitively, without optional ones) as installed in the root node_modules. */
function runtimeDeps(pkgDir: string, seen = new Map<string, string>()): Map<string, string> {
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  for (const name of Object.keys(pkg.dependencies ?? {})) {
    if (seen.has(name)) continue;
    const dir = join(ROOT, 'node_modules', name);
    seen.set(name, dir);
    runtimeDeps(dir, seen);
  }
  return seen;
}

const script = `
import { IndexClient, IndexState, ValidationError } from '@dfaiss/client';
const out = {};
try { await import('dfaiss'); out.dfaissVisible = true; } catch { out.dfaissVisible = false; }
const client = await IndexClient.connect(process.argv[2], { discoveryTimeoutMs: 20000 });
out.servers = client.numServers;
try { await client.createIndex('bad', { indexBuilderType: 'flat', dim: -3 }); } catch (e) { out.badDim = { validation: e instanceof ValidationError, message: e.message }; }
await client.createIndex('pkg', { indexBuilderType: 'flat', dim: 8, metric: 'l2' });
const n = 200, dim = 8;
const vectors = Float32Array.from({ length: n * dim }, (_, i) => Math.sin(i * 0.37) + (i % dim) * 0.01);
for (let b = 0; b < 4; b++) {
  const rows = vectors.subarray(b * 50 * dim, (b + 1) * 50 * dim);
  await client.addIndexData('pkg', rows, Array.from({ length: 50 }, (_, i) => ({ row: b * 50 + i })));
}
while ((await client.getState('pkg')) !== IndexState.TRAINED) await new Promise((r) => setTimeout(r, 20));
out.ntotal = await client.getNtotal('pkg');
const probe = [3, 77, 150, 199];
const queries = Float32Array.from(probe.flatMap((r) => Array.from(vectors.subarray(r * dim, (r + 1) * dim))));
const res = await client.search('pkg', queries, 3);
out.top = res.metadata.map((m) => m[0].row);
out.topScores = res.scores.map((s) => s[0]);
out.sorted = res.scores.every((s) => s[0] <= s[1] && s[1] <= s[2]);
await client.close();
console.log(JSON.stringify(out));
`;

test('@dfaiss/client installed from its tarball into an empty project, without native code or dfaiss, searches a live cluster', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dfaiss-client-pkg-'));
  const cluster = await startCluster(2);
  try {
    const tarballs = [pack(CLIENT_DIR, dir), ...[...runtimeDeps(CLIENT_DIR).values()].map((d) => pack(d, dir))];
    const app = join(dir, 'app');
    const bin = join(dir, 'bin');
    mkdirSync(app);
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    writeFileSync(join(app, 'main.mjs'), script);
    // Nothing from this machine's environment: PATH holds node alone (no node-gyp, no
    // compiler), no NODE_PATH, no LD_LIBRARY_PATH; npm's cache is the only source.
    const env = { HOME: process.env.HOME ?? dir, PATH: bin };
    const install = await collect(spawn(process.execPath, [NPM_CLI, 'install', '--offline', '--omit=optional', '--no-audit', '--no-fund', ...tarballs], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] }), 120_000, 'npm install');
    assert.equal(install.code, 0, `npm install: ${install.stderr}`);
    const installed = join(app, 'node_modules/@dfaiss/client');
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { scripts?: Record<string, string>; gypfile?: boolean };
    assert.deepEqual(Object.keys(manifest.scripts ?? {}).filter((s) => /install/.test(s)), [], 'no install scripts');
    assert.ok(!manifest.gypfile && !existsSync(join(installed, 'binding.gyp')) && !existsSync(join(installed, 'build')), 'nothing native was built');
    assert.ok(!existsSync(join(app, 'node_modules/dfaiss')) && !existsSync(join(app, 'node_modules/msgpackr-extract')));

    const run = await collect(spawn(process.execPath, ['--import', NO_NATIVE, 'main.mjs', cluster.discovery], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] }), 60_000, 'client app');
    assert.equal(run.code, 0, run.stderr);
    const out = JSON.parse(run.stdout.trim()) as Record<string, unknown>;
    assert.equal(out.dfaissVisible, false, "'dfaiss' cannot be imported from the app");
    assert.equal(out.servers, 2);
    assert.deepEqual(out.badDim && { validation: (out.badDim as { validation: boolean }).validation }, { validation: true });
    assert.match((out.badDim as { message: string }).message, /dim/);
    assert.equal(out.ntotal, 200);
    assert.deepEqual(out.top, [3, 77, 150, 199], 'each query finds its own row first');
    assert.deepEqual(out.topScores, [0, 0, 0, 0]);
    assert.equal(out.sorted, true);
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
