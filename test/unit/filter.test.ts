// The declarative filter (src/filter/): validation errors, evaluation semantics, and that the
// payload index and the record-by-record scan select exactly the same records. No servers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ValidationError } from '../../src/errors.js';
import { Bits, PayloadIndex, compilePredicate, parseFilter, selectRecords, type FilterSource } from '../../src/filter/index.js';
import { prng } from '../../src/util/random.js';

function rejects(filter: unknown, field: RegExp, expected: RegExp): void {
  assert.throws(
    () => parseFilter(filter),
    (e: unknown) => e instanceof ValidationError && field.test(e.field) && expected.test(e.message),
    `${JSON.stringify(filter)} -> ${(() => {
      try {
        parseFilter(filter);
        return 'accepted';
      } catch (e) {
        return (e as Error).message;
      }
    })()}`,
  );
}

test('validation names the path inside the filter and what was expected there', () => {
  rejects(null, /^filter$/, /a filter object/);
  rejects([{ a: 1 }], /^filter$/, /a filter object/);
  rejects({ year: { $gt: 'x', $lt: [] } }, /^filter\.year\.\$lt$/, /finite number or a string/);
  rejects({ year: { $ge: 3 } }, /^filter\.year\.\$ge$/, /one of the operators.*did you mean '\$gte'/);
  rejects({ $and: [] }, /^filter\.\$and$/, /non-empty array/);
  rejects({ $or: [{ a: 1 }, { b: { $in: 'x' } }] }, /^filter\.\$or\[1\]\.b\.\$in$/, /an array/);
  rejects({ $gt: 3 }, /^filter\.\$gt$/, /inside a field/);
  rejects({ a: { b: 1 } }, /^filter\.a\.b$/, /dot paths/);
  rejects({ a: {} }, /^filter\.a$/, /at least one operator/);
  rejects({ 'a..b': 1 }, /^filter\.a\.\.b$/, /field path/);
  rejects({ a: { $exists: 1 } }, /^filter\.a\.\$exists$/, /true or false/);
  rejects({ a: Number.NaN }, /^filter\.a$/, /a value to compare with/);
  rejects({ $not: { $not: { a: [1] } } }, /^filter\.\$not\.\$not\.a$/, /a value to compare with/);
  let deep: unknown = { a: 1 };
  for (let i = 0; i < 40; i++) deep = { $not: deep };
  rejects(deep, /^filter(\.\$not)+$/, /nested at most 32/);
  rejects({ a: { $in: Array.from({ length: 70000 }, (_, i) => i) } }, /^filter\.a\.\$in$/, /at most 65536/);
  assert.deepEqual(parseFilter({}), { kind: 'all' });
});

test('evaluation: equality, $ne/$nin match missing fields, arrays match any element, comparisons within a type', () => {
  const m = { lang: 'en', year: 2021, tags: ['a', 'b'], nested: { x: { y: 3 } }, list: [{ k: 1 }, { k: 2 }], nil: null };
  const okId = (f: unknown, id: string | number | undefined) => compilePredicate(parseFilter(f))(m, id);
  const ok = (f: unknown) => okId(f, 'doc-1');
  assert.ok(ok({ lang: 'en', year: 2021 }));
  assert.ok(!ok({ lang: 'de' }));
  assert.ok(ok({ lang: { $ne: 'de' } }));
  assert.ok(ok({ missing: { $ne: 1 } }), '$ne matches a record without the field');
  assert.ok(ok({ missing: { $nin: [1] } }));
  assert.ok(!ok({ missing: { $in: [1] } }));
  assert.ok(ok({ tags: 'b' }), 'an array field matches when any element does');
  assert.ok(!ok({ tags: { $ne: 'b' } }));
  assert.ok(ok({ 'tags.1': 'b' }) && !ok({ 'tags.0': 'b' }), 'numeric segments index arrays');
  assert.ok(ok({ 'nested.x.y': { $gte: 3, $lt: 4 } }));
  assert.ok(ok({ 'list.k': 2 }), 'a name over an array of objects walks every element');
  assert.ok(!ok({ year: { $gt: '2000' } }), 'a string bound never matches a number');
  assert.ok(ok({ lang: { $gte: 'e', $lt: 'f' } }));
  assert.ok(ok({ nil: null }) && !ok({ missing: null }), 'null equals an explicit null only');
  assert.ok(ok({ nil: { $exists: true } }) && ok({ missing: { $exists: false } }));
  assert.ok(ok({ $or: [{ lang: 'de' }, { year: { $in: [2020, 2021] } }] }));
  assert.ok(ok({ $not: { lang: 'de' } }) && !ok({ $not: { lang: 'en' } }));
  assert.ok(ok({ $and: [{ lang: 'en' }, { tags: { $in: ['z', 'a'] } }] }));
  assert.ok(ok({ $id: 'doc-1' }) && ok({ $id: { $in: ['x', 'doc-1'] } }) && !ok({ $id: 7 }));
  assert.ok(okId({ $id: { $exists: false } }, undefined), 'vectors without ids have no $id');
  assert.ok(compilePredicate(parseFilter({ '0': 3 }))([3, 'x'], undefined), 'the original list metadata: position 0');
});

/** A shard-like source over plain objects. */
function source(metas: unknown[], ids: Array<string | number | undefined>, payload: PayloadIndex | null): FilterSource {
  const where = new Map<string | number, number>();
  ids.forEach((id, i) => id !== undefined && where.set(id, i));
  return { metadataOf: (i) => metas[i], idOf: (i) => ids[i], lookup: (id) => where.get(id), payload };
}

test('the payload index selects exactly what the scan selects, over live records only, and decodes nothing when it covers the filter', async () => {
  const n = 5000;
  const rand = prng(7);
  const langs = ['en', 'de', 'fr', 'ja'];
  const metas = Array.from({ length: n }, (_, i) => (i % 97 === 0 ? null : { lang: langs[i % 4], year: 1990 + (i % 35), tags: i % 3 === 0 ? ['x', 'y'] : ['y'], score: rand(), ...(i % 5 === 0 ? { extra: { deep: i % 10 } } : {}) }));
  const ids = Array.from({ length: n }, (_, i) => (i % 2 ? `s${i}` : i));
  const payload = new PayloadIndex(['lang', 'year', 'tags', 'extra.deep']);
  payload.append(n, (i) => metas[i]);
  const live = Bits.full(n);
  for (let i = 0; i < n; i += 7) live.andNot(single(n, i)); // "deleted" records
  const filters: unknown[] = [
    { lang: 'en' },
    { lang: { $in: ['de', 'ja'] }, year: { $gte: 2000, $lt: 2010 } },
    { tags: 'x' },
    { tags: { $nin: ['x'] } },
    { 'extra.deep': { $exists: true } },
    { 'extra.deep': { $exists: false } },
    { $or: [{ lang: 'fr' }, { year: 1990 }] },
    { $not: { lang: 'en' } },
    { lang: 'en', score: { $lt: 0.1 } }, // score is not indexed: a narrowed scan
    { $or: [{ score: { $gt: 0.95 } }, { year: 2001 }] },
    { $id: { $in: [0, 's1', 's3', 14, 'nope'] } },
    { $id: { $gte: 4000 } },
    {},
  ];
  for (const f of filters) {
    const node = parseFilter(f);
    const pred = compilePredicate(node);
    const want = live.toArray().filter((i) => pred(metas[i], ids[i]));
    const withIndex = await selectRecords(node, source(metas, ids, payload), live);
    const scan = await selectRecords(node, source(metas, ids, null), live);
    assert.deepEqual(withIndex.bits.toArray(), want, `payload index: ${JSON.stringify(f)}`);
    assert.deepEqual(scan.bits.toArray(), want, `scan: ${JSON.stringify(f)}`);
    assert.equal(withIndex.bits.count(), want.length);
  }
  assert.equal((await selectRecords(parseFilter({ lang: { $in: ['de', 'ja'] }, year: { $gte: 2000 } }), source(metas, ids, payload), live)).scanned, 0);
  assert.ok((await selectRecords(parseFilter({ lang: 'en', score: { $lt: 0.1 } }), source(metas, ids, payload), live)).scanned <= Math.ceil(n / 4), 'the scan only decodes what the indexed test left');
});

function single(size: number, i: number): Bits {
  const b = new Bits(size);
  b.set(i);
  return b;
}

test('bits: FAISS bitmap byte layout, counts and iteration', () => {
  const b = new Bits(70);
  for (const i of [0, 9, 31, 32, 69]) b.set(i);
  b.set(70); // out of range: ignored
  assert.deepEqual([...b.bytes], [0b1, 0b10, 0, 0b10000000, 0b1, 0, 0, 0, 0b100000]);
  assert.equal(b.count(), 5);
  assert.deepEqual(b.toArray(), [0, 9, 31, 32, 69]);
  assert.equal(Bits.full(70).count(), 70);
  assert.equal(Bits.full(64).count(), 64);
});

test('a long scan yields to the event loop (a filter over many records never stalls a server)', async () => {
  const n = 100_000;
  const metas = Array.from({ length: n }, (_, i) => ({ v: i }));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  try {
    const r = await selectRecords(parseFilter({ v: { $gte: n - 5 } }), source(metas, [], null), Bits.full(n));
    assert.deepEqual(r.bits.toArray(), [n - 5, n - 4, n - 3, n - 2, n - 1]);
    assert.equal(r.scanned, n);
  } finally {
    clearInterval(timer);
  }
  assert.ok(ticks >= 2, `timers ran ${ticks} times during the scan`);
});
