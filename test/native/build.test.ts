// Which FAISS the addon links (issue 11): `dfaiss info` names the level setup built for,
// and an addon built for instructions the CPU lacks refuses to load before FAISS runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runCli } from '../helpers/cli.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

interface Info {
  faiss: { version: string; simd: string; compileOptions: string; blas: string; gpu: boolean; linked: string | null };
}

test('dfaiss info reports the FAISS version, the SIMD level setup picked for this CPU, and the BLAS', async () => {
  const r = await runCli(['info']);
  assert.equal(r.code, 0, r.stderr);
  const { faiss } = JSON.parse(r.stdout) as Info;
  // What scripts/faiss-config.mjs resolves now (avx2 on a CPU with avx2+fma+f16c, once built).
  const want = execFileSync(process.execPath, [`${REPO}scripts/faiss-config.mjs`, 'level'], { encoding: 'utf8' }).trim();
  assert.equal(faiss.simd, want);
  assert.equal(faiss.version, '1.7.3');
  // FAISS's own record of its compile flags agrees with the level the addon was told.
  assert.match(faiss.compileOptions, want === 'generic' ? /GENERIC/ : new RegExp(want, 'i'));
  assert.match(faiss.blas, /^OpenBLAS \d/);
  assert.ok(faiss.linked?.includes(`level ${want}`), String(faiss.linked));
});

// The real CPU has every feature this build needs, so the failure is simulated: the env var
// can only add features to the list the real check (native/cpu_check.cc) found missing.
test('an addon built for instructions the CPU lacks fails with NativeLoadError, without loading FAISS', () => {
  const probe = `
    import { readFileSync } from 'node:fs';
    let error = null;
    try { await import('./dist/native/index.js'); } catch (e) { error = { name: e.name, code: e.code, message: e.message }; }
    const maps = readFileSync('/proc/self/maps', 'utf8');
    console.log(JSON.stringify({ error, nativeMapped: maps.includes('dfaiss_native.node'), checkMapped: maps.includes('dfaiss_cpu.node') }));`;
  const run = (env: Record<string, string>) => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: REPO, encoding: 'utf8', env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE', ...env } });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { error: { name: string; code: string; message: string } | null; nativeMapped: boolean; checkMapped: boolean };
  };
  const ok = run({});
  assert.equal(ok.error, null);
  assert.ok(ok.nativeMapped && ok.checkMapped);

  const level = execFileSync(process.execPath, [`${REPO}scripts/faiss-config.mjs`, 'level'], { encoding: 'utf8' }).trim();
  const lacks = run({ DFAISS_SIMULATE_MISSING_CPU_FEATURES: 'avx2,fma' });
  if (level === 'generic') {
    assert.equal(lacks.error, null, 'a generic build needs no feature, so nothing can be missing');
    return;
  }
  assert.equal(lacks.error?.name, 'NativeLoadError');
  assert.equal(lacks.error.code, 'NATIVE_LOAD');
  assert.match(lacks.error.message, new RegExp(`built for ${level}, but this CPU lacks avx2, fma`));
  assert.match(lacks.error.message, /npm run setup/);
  assert.equal(lacks.checkMapped, true);
  assert.equal(lacks.nativeMapped, false, 'the FAISS module must not be loaded at all');
});
