/**
 * The import graph of src/ (runtime imports only: what TypeScript keeps after erasing types):
 * no cycles, no import against the layering, and the code that must run without FAISS (the
 * client entry, the launchers, the CLI's operating commands, the loader, the dashboard)
 * never reaches src/native/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { fp16ToFp32 } from '../../src/native/index.js';
import { halfToFloat32 } from '../../src/vectors.js';

const root = new URL('../../src', import.meta.url).pathname;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? sources(p) : name.endsWith('.ts') ? [p] : [];
  });
}

/** file (relative to src/) -> the files it imports at run time. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(root)) {
    // transpileModule drops type-only imports and imports used only as types, as tsc does.
    const js = ts.transpileModule(readFileSync(file, 'utf8'), { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
    const deps = new Set<string>();
    for (const m of js.matchAll(/\b(?:import|export)\s[^'"]*?from\s*['"](\.[^'"]+)['"]|\bimport\s*['"](\.[^'"]+)['"]|\bimport\(\s*['"](\.[^'"]+)['"]\s*\)/g)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      deps.add(relative(root, resolve(dirname(file), spec.replace(/\.js$/, '.ts'))));
    }
    graph.set(relative(root, file), [...deps]);
  }
  return graph;
}

const graph = importGraph();
const area = (file: string): string => (file.includes('/') ? file.slice(0, file.indexOf('/')) : file.replace(/\.ts$/, ''));

test('the import graph is read (sanity: known edges are seen, type-only ones are not)', () => {
  assert.ok(graph.size > 100, `${graph.size} files`);
  assert.ok(graph.get('client/index-client.ts')!.includes('client/placement.ts'));
  assert.ok(graph.get('server/index-server.ts')!.includes('native/index.ts'));
  // implement.ts imports CONTRACT as a value, contract.ts imports the protocol's AttachmentRule as a type only.
  assert.ok(graph.get('server/implement.ts')!.includes('contract.ts'));
  assert.ok(!graph.get('contract.ts')!.some((d) => d.startsWith('protocol/')));
});

test('no circular imports', () => {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const d of graph.get(f) ?? []) {
      if (state.get(d) === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d].join(' -> '));
      else if (!state.has(d)) visit(d);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f);
  assert.deepEqual(cycles, []);
});

/** Areas an area must not import (each line is one layering rule). */
const FORBIDDEN: Record<string, readonly string[]> = {
  errors: ['*'],
  vectors: ['*'],
  util: ['*'],
  discovery: ['client', 'server', 'shard', 'native', 'launch', 'cli', 'config', 'protocol'],
  protocol: ['client', 'server', 'shard', 'native', 'launch', 'cli', 'loader', 'dashboard', 'config'],
  native: ['client', 'server', 'shard', 'launch', 'cli', 'config', 'protocol', 'loader', 'dashboard'],
  config: ['client', 'server', 'shard', 'launch', 'cli', 'protocol'],
  shard: ['client', 'server', 'launch', 'cli', 'dashboard', 'loader'],
  server: ['client', 'launch', 'cli', 'dashboard', 'loader'],
  client: ['server', 'launch', 'cli', 'native', 'dashboard', 'loader'],
  launch: ['client', 'server', 'shard', 'native', 'cli', 'loader', 'dashboard'],
};
const ALLOWED_LEAF: Record<string, readonly string[]> = { vectors: ['errors'], util: ['errors'] };

test('no upward imports: each area imports only the layers below it', () => {
  const wrong: string[] = [];
  for (const [file, deps] of graph) {
    const from = area(file);
    const banned = FORBIDDEN[from];
    if (!banned) continue;
    for (const d of deps) {
      const to = area(d);
      if (to === from) continue;
      if (banned.includes(to) || (banned.includes('*') && !(ALLOWED_LEAF[from] ?? []).includes(to))) wrong.push(`${file} -> ${d}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test('the client entry, the launchers, the loader, the dashboard and the CLI\'s operating commands never reach src/native/', () => {
  const noNative = [...graph.keys()].filter(
    (f) => f === 'client.ts' || f === 'shard-operation.ts' || /^(launch|loader|dashboard|discovery|protocol|client)\//.test(f) || (f.startsWith('cli/') && f !== 'cli/main.ts' && f !== 'cli/server.ts'),
  );
  assert.ok(noNative.includes('cli/ops.ts') && noNative.includes('launch/local.ts') && noNative.includes('client.ts'));
  const reached: string[] = [];
  for (const start of noNative) {
    const via = new Map<string, string>();
    const queue = [start];
    while (queue.length > 0) {
      const f = queue.shift()!;
      for (const d of graph.get(f) ?? []) {
        if (via.has(d) || d === start) continue;
        via.set(d, f);
        if (d.startsWith('native/')) {
          const path = [d];
          for (let p = f; p !== start; p = via.get(p)!) path.unshift(p);
          reached.push([start, ...path].join(' -> '));
          queue.length = 0;
          break;
        }
        queue.push(d);
      }
    }
  }
  assert.deepEqual(reached, []);
});

test('the pure float16 conversion (for code without FAISS) matches the native one for every half value', () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const mine = halfToFloat32(all);
  const native = fp16ToFp32(all);
  for (let i = 0; i < all.length; i++) {
    if (Number.isNaN(native[i]!)) assert.ok(Number.isNaN(mine[i]!), `half 0x${i.toString(16)}`);
    else assert.equal(mine[i], native[i], `half 0x${i.toString(16)}`);
  }
});
