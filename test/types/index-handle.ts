// Type-level test of client.index<M>(id): compiled by test/unit/types.test.ts (and by
// `npm run typecheck`). Each @ts-expect-error line must be an error, or the compile fails.
import type { IndexClient } from '../../src/client.js';

declare const client: IndexClient;
interface Doc {
  title: string;
  year: number;
}
const q = new Float32Array(8);

export async function typed(): Promise<void> {
  const docs = client.index<Doc>('docs');
  const r = await docs.search(q, 5, { timeoutMs: 1000 });
  const title: string = r.metadata[0]![0]!.title;
  // @ts-expect-error metadata is a Doc, not a number
  const wrong: number = r.metadata[0]![0]!;
  const got = await docs.get([1, 'a'], { returnEmbeddings: true, signal: AbortSignal.timeout(1000) });
  const year: number = got.records[0]!.metadata.year;
  for await (const page of docs.iterate({ batchSize: 10 })) {
    const t: string = page.records[0]!.metadata.title;
    void t;
  }
  const range = await docs.rangeSearch(q, 0.5);
  const rt: string = range.metadata[0]![0]!.title;
  await docs.add(q, [{ title: 'a', year: 1 }]);
  // @ts-expect-error metadata must be Docs
  await docs.add(q, [{ title: 1 }]);
  await docs.upsert(['a'], q, [{ title: 'b', year: 2 }], { timeoutMs: 10 });
  const filtered = await docs.searchWithFilter(q, 3, { where: (m) => m.year > 2000 });
  const ft: string = filtered.metadata[0]![0]!.title;
  // @ts-expect-error Doc has no field 'missing'
  await docs.searchWithFilter(q, 3, { where: (m) => m.missing === 1 });
  void [title, wrong, year, rt, ft];
}

export async function untyped(): Promise<void> {
  const raw = client.index('raw');
  const r = await raw.search(q, 1);
  const m: unknown = r.metadata[0]![0];
  // @ts-expect-error unknown metadata has no fields
  void r.metadata[0]![0]!.title;
  // Every call takes per-call control.
  await client.getNtotal('raw', { timeoutMs: 5 });
  await client.createIndex('raw', {}, { signal: AbortSignal.timeout(5) });
  await client.dropIndex('raw', { timeoutMs: 5 });
  await client.status({ timeoutMs: 5 });
  void m;
}
