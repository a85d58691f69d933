#!/usr/bin/env node
// Which FAISS the native addon links, for binding.gyp and scripts/setup.sh. In order:
//   1. DFAISS_FAISS_PREFIX=/path: a FAISS the user built (include/faiss, lib/libfaiss*.{a,so});
//   2. the build scripts/faiss-build.sh cached for this CPU's best level;
//   3. Debian's libfaiss-dev (generic, no AVX2), the fallback.
// Usage: node scripts/faiss-config.mjs best-level|cache-dir|include|libs|level|gpu|describe
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const FAISS_VERSION = '1.7.3';
// Instructions each level's code may use: FAISS's avx2 build compiles with -mavx2 -mfma -mf16c -mpopcnt.
export const LEVEL_FEATURES = { generic: [], avx2: ['avx2', 'fma', 'f16c', 'popcnt'], avx512: ['avx2', 'fma', 'f16c', 'popcnt', 'avx512f', 'avx512cd', 'avx512vl', 'avx512dq', 'avx512bw'] };

function cpuFlags() {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    return new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
  } catch {
    return new Set();
  }
}

/** avx2 only: avx512 is not the default, it was slower for IVF-Flat on the CPU measured (issue 11). */
export function bestLevel() {
  const forced = process.env.DFAISS_FAISS_LEVEL;
  if (forced) {
    if (forced !== 'avx2' && forced !== 'generic') throw new Error(`DFAISS_FAISS_LEVEL must be 'avx2' or 'generic', got '${forced}'`);
    return forced;
  }
  const flags = cpuFlags();
  return ['avx2', 'fma', 'f16c'].every((f) => flags.has(f)) ? 'avx2' : 'generic';
}

export function cacheDir() {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'dfaiss');
}

const SYSTEM_LIB = '/usr/lib/x86_64-linux-gnu/libfaiss.a';

/** { source, include, lib, level, gpu }: the FAISS to link. */
export function resolve() {
  const prefix = process.env.DFAISS_FAISS_PREFIX;
  if (prefix) {
    if (!existsSync(join(prefix, 'include', 'faiss', 'Index.h'))) throw new Error(`DFAISS_FAISS_PREFIX=${prefix}: no include/faiss/Index.h there`);
    // cmake --install of an avx2/avx512 build installs the generic library next to the optimised one.
    // lib/x86_64-linux-gnu too, so DFAISS_FAISS_PREFIX=/usr names Debian's libfaiss-dev.
    const names = ['libfaiss_avx512', 'libfaiss_avx2', 'libfaiss'].flatMap((n) => [`${n}.a`, `${n}.so`]);
    const lib = ['lib', 'lib64', 'lib/x86_64-linux-gnu'].flatMap((d) => names.map((n) => join(prefix, d, n))).find((p) => existsSync(p));
    if (!lib) throw new Error(`DFAISS_FAISS_PREFIX=${prefix}: no lib/libfaiss{,_avx2,_avx512}.{a,so} there`);
    const level = lib.includes('_avx512') ? 'avx512' : lib.includes('_avx2') ? 'avx2' : 'generic';
    const gpu = existsSync(join(prefix, 'include', 'faiss', 'gpu', 'GpuIndex.h'));
    return { source: `DFAISS_FAISS_PREFIX=${prefix}`, include: join(prefix, 'include'), lib, level, gpu };
  }
  const level = bestLevel();
  const dir = join(cacheDir(), `faiss-${FAISS_VERSION}-${level}`);
  if (existsSync(join(dir, 'build-info.json'))) {
    const info = JSON.parse(readFileSync(join(dir, 'build-info.json'), 'utf8'));
    return { source: `${info.debianSource} built for ${level} (${dir})`, include: join(dir, 'include'), lib: join(dir, info.library), level, gpu: false };
  }
  return { source: `Debian libfaiss-dev (${SYSTEM_LIB})`, include: '/usr/include', lib: SYSTEM_LIB, level: 'generic', gpu: false };
}

function main(cmd) {
  if (cmd === 'best-level') return bestLevel();
  if (cmd === 'cache-dir') return cacheDir();
  const r = resolve();
  switch (cmd) {
    case 'include': return r.include;
    case 'level': return r.level;
    case 'gpu': return r.gpu ? '1' : '0';
    // For gyp's <!@(...): a shared library also needs its folder on the run-time path.
    case 'libs': return r.lib.endsWith('.so') ? `${r.lib} -Wl,-rpath,${join(r.lib, '..')}${r.gpu ? ' -lcudart -lcublas' : ''}` : r.lib;
    case 'describe': return `${r.source}: ${r.lib}, level ${r.level}`;
    default: throw new Error(`unknown command '${cmd}': best-level, cache-dir, include, libs, level, gpu or describe`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    console.log(main(process.argv[2]));
  } catch (err) {
    console.error(`faiss-config: ${err.message}`);
    process.exit(1);
  }
}
