// The RPC contract (src/contract.ts) and docs/protocol.md say the same thing: the same
// methods, and for each the same argument names. The server's method table implements
// every method of the contract and nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { CONTRACT } from '../../src/contract.js';
import { buildMethods } from '../../src/server/methods.js';
import type { IndexServer } from '../../src/server/index-server.js';

const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');

/** method -> top-level argument names, from the table in section 10 of protocol.md. */
function documented(): Map<string, string[]> {
  const section = doc.slice(doc.indexOf('## 10. Methods'));
  const table = section.slice(section.indexOf('| method | args |')).split('\n\n')[0]!;
  const out = new Map<string, string[]>();
  for (const line of table.split('\n')) {
    const m = /^\| `(\w+)` \| `([^`]*)`/.exec(line);
    if (!m) continue;
    // Top-level keys of "{a, b?: x, c: {d, e}}": skip anything inside nested braces/brackets.
    const body = m[2]!.trim().replace(/^\{|\}$/g, '');
    const names: string[] = [];
    let depth = 0;
    let token = '';
    for (const ch of body + ',') {
      if (ch === '{' || ch === '[') depth++;
      if (ch === '}' || ch === ']') depth--;
      if (depth === 0 && ch === ',') {
        const name = /^\s*(\w+)/.exec(token)?.[1];
        if (name) names.push(name);
        token = '';
      } else token += ch;
    }
    out.set(m[1]!, names.sort());
  }
  return out;
}

function contractArgs(schema: z.ZodType): string[] {
  let s = schema as z.ZodType & { unwrap?: () => z.ZodType; shape?: Record<string, unknown> };
  while (!s.shape && s.unwrap) s = s.unwrap() as typeof s;
  return Object.keys(s.shape ?? {}).sort();
}

test('docs/protocol.md lists every method of the contract with the same argument names', () => {
  const docs = documented();
  assert.deepEqual([...docs.keys()].sort(), Object.keys(CONTRACT).sort(), 'the same methods');
  for (const [name, spec] of Object.entries(CONTRACT)) {
    assert.deepEqual(docs.get(name), contractArgs(spec.args), `arguments of ${name}`);
  }
});

test('the server implements exactly the contract, with its schemas', () => {
  const table = buildMethods({} as IndexServer);
  assert.deepEqual(Object.keys(table).sort(), Object.keys(CONTRACT).sort());
  for (const [name, spec] of Object.entries(table)) assert.equal(spec.schema, CONTRACT[name as keyof typeof CONTRACT].args, name);
});
