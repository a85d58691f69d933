import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeQuery } from '../../src/client/merge.js';
import { IndexState, aggregateStates } from '../../src/shard/state.js';
import { parseDiscovery } from '../../src/discovery/discovery-file.js';

const shard = (d: number[], l: number[]) => ({ distances: Float32Array.from(d), labels: BigInt64Array.from(l.map(BigInt)), k: d.length });

test('merge keeps the smallest distances for l2', () => {
  const hits = mergeQuery([shard([0.1, 0.5, 0.9], [1, 2, 3]), shard([0.2, 0.3, 2], [7, 8, 9])], 0, 4, 'l2');
  assert.deepEqual(hits.map((h) => [h.shard, h.slot]), [[0, 0], [1, 0], [1, 1], [0, 1]]);
  assert.deepEqual(hits.map((h) => Math.round(h.score * 10)), [1, 2, 3, 5]);
});

test('merge keeps the largest scores for dot', () => {
  const hits = mergeQuery([shard([0.9, 0.5, 0.1], [1, 2, 3]), shard([2, 0.3, 0.2], [7, 8, 9])], 0, 3, 'dot');
  assert.deepEqual(hits.map((h) => [h.shard, h.slot]), [[1, 0], [0, 0], [0, 1]]);
});

test('merge skips -1 slots (shards with fewer than k vectors) and handles several queries', () => {
  const a = { distances: Float32Array.from([1, Infinity, 5, 6]), labels: BigInt64Array.from([4n, -1n, 1n, 2n]), k: 2 };
  const b = { distances: Float32Array.from([Infinity, Infinity, 0.5, Infinity]), labels: BigInt64Array.from([-1n, -1n, 3n, -1n]), k: 2 };
  assert.deepEqual(mergeQuery([a, b], 0, 2, 'l2').map((h) => [h.shard, h.slot]), [[0, 0]]);
  assert.deepEqual(mergeQuery([a, b], 1, 2, 'l2').map((h) => [h.shard, h.slot]), [[1, 2], [0, 2]]);
});

test('ties break by shard order, deterministically', () => {
  const hits = mergeQuery([shard([1, 1], [1, 2]), shard([1, 1], [3, 4])], 0, 3, 'l2');
  assert.deepEqual(hits.map((h) => [h.shard, h.slot]), [[0, 0], [0, 1], [1, 0]]);
});

test('state aggregation follows the original rules', () => {
  const { NOT_TRAINED, TRAINING, TRAINED, ADD } = IndexState;
  assert.equal(aggregateStates([TRAINED, TRAINED]), TRAINED);
  assert.equal(aggregateStates([TRAINED, TRAINING, NOT_TRAINED]), TRAINING);
  assert.equal(aggregateStates([TRAINED, NOT_TRAINED, ADD]), NOT_TRAINED);
  assert.equal(aggregateStates([TRAINED, ADD]), ADD);
  assert.equal(aggregateStates([ADD, ADD]), ADD);
});

test('discovery file parsing: count line, CRLF, bad lines named', () => {
  assert.deepEqual(parseDiscovery('2\r\nhost-a,1234\r\nhost-b,99\r\n'), { expected: 2, servers: [{ host: 'host-a', port: 1234 }, { host: 'host-b', port: 99 }] });
  assert.throws(() => parseDiscovery('x\n'), /line 1/);
  assert.throws(() => parseDiscovery('1\nhost-only\n'), /line 2: expected "host,port"/);
});

test('metadataReader decodes single hits in place; empty slots read null; a malformed item names its slot', async () => {
  const { encodeMetadata, metadataReader, offsetsView, offsetsBytes } = await import('../../src/protocol/metadata.js');
  const { ValidationError } = await import('../../src/errors.js');
  const { blob, offsets } = encodeMetadata([{ doc: 'a', tags: [1, 2] }, 7, null, 'x'], 4);
  const read = metadataReader(blob, offsetsView(offsetsBytes(offsets)));
  assert.deepEqual([read(0), read(1), read(2), read(3)], [{ doc: 'a', tags: [1, 2] }, 7, null, 'x']);
  // A -1 slot in a search reply has an empty entry.
  const withEmpty = new Uint32Array([0, offsets[1]!, offsets[1]!]);
  assert.equal(metadataReader(blob, withEmpty)(1), null);
  // Two values in one entry, or half of one: refused, naming the slot.
  const twoInOne = new Uint32Array([0, offsets[2]!]);
  assert.throws(() => metadataReader(blob, twoInOne)(0), (e: Error) => e instanceof ValidationError && /metadata\[0\]/.test(e.message));
  const half = new Uint32Array([0, 2]);
  assert.throws(() => metadataReader(blob, half)(0), ValidationError);
});
