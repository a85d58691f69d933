/**
 * The fast paths of batch metadata (issue 14): encodeMetadata writes strings, small integers
 * and booleans itself, and validateMetadata accepts items by scanning their bytes. Both must
 * agree exactly with msgpackr decoding: what decodes comes back equal, and the scan accepts
 * an item only when decoding accepts it (anything else takes the decoding path and its error).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { ValidationError } from '../../src/errors.js';
import { decodeMetadataItem, encodeMetadata, validateMetadata } from '../../src/protocol/metadata.js';
import { prng } from '../../src/util/random.js';

const items = (enc: { blob: Uint8Array; offsets: Uint32Array }): unknown[] =>
  Array.from({ length: enc.offsets.length - 1 }, (_, i) => decodeMetadataItem(enc.blob.subarray(enc.offsets[i]!, enc.offsets[i + 1]!)));

describe('encodeMetadata fast path', () => {
  it('round-trips strings, integers at every width boundary, booleans and the rest', () => {
    const values: unknown[] = [
      '', 'a', '0123456789', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(70_000),
      'é', 'é'.repeat(15), 'é'.repeat(16), 'é'.repeat(200), '日本語', '🙂'.repeat(9), 'a🙂', '\u0000', 'ascii then ü',
      0, 1, 127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, -1, -32, -33, -128, -129, -32_768, -32_769, -(2 ** 31), -(2 ** 31) - 1,
      -0, 1.5, NaN, Infinity, Number.MAX_SAFE_INTEGER, true, false, null, undefined, { a: 1, b: 'x' }, [1, 'two'], new Uint8Array([1, 2, 3]), 2n ** 62n,
    ];
    const back = items(encodeMetadata(values, values.length));
    values.forEach((v, i) => {
      if (v === undefined) assert.equal(back[i], null, `item ${i}`);
      else if (Object.is(v, -0)) assert.equal(back[i], 0, 'item -0'); // packs as the integer 0 (msgpackr's choice, as before)
      else assert.deepEqual(back[i], v, `item ${i}: ${String(v).slice(0, 20)}`);
      if (typeof v === 'number' && !Object.is(v, -0)) assert.ok(Object.is(back[i], v) || Number.isNaN(v), `item ${i}: ${v}`);
    });
  });

  it('still names the item that cannot be packed', () => {
    assert.throws(() => encodeMetadata(['ok', new Date(0)], 2), (e: unknown) => e instanceof ValidationError && /metadata\[1\]/.test(e.message));
  });
});

describe('validateMetadata byte scan', () => {
  const packr = new Packr({ useRecords: false, variableMapSize: true } as ConstructorParameters<typeof Packr>[0]);

  /** Accepts iff decoding every item accepts (the reference: the code before the scan). */
  const reference = (blob: Uint8Array, offsets: Uint32Array): boolean => {
    try {
      for (let i = 0; i + 1 < offsets.length; i++) decodeMetadataItem(blob.subarray(offsets[i]!, offsets[i + 1]!));
      return true;
    } catch {
      return false;
    }
  };
  const accepts = (blob: Uint8Array, offsets: Uint32Array): boolean => {
    try {
      validateMetadata(blob, offsets, offsets.length - 1);
      return true;
    } catch (err) {
      assert.ok(err instanceof ValidationError, String(err));
      return false;
    }
  };
  const one = (bytes: number[] | Uint8Array): [Uint8Array, Uint32Array] => [Uint8Array.from(bytes), Uint32Array.of(0, bytes.length)];

  it('agrees with decoding on hand-picked edge cases', () => {
    const cases: Array<number[]> = [
      [0xc0], [0xc1], [0xc2], [0xc3], [0x7f], [0xe0], [0xcc, 1], [0xcc], [0xcf, 0, 0, 0, 0, 0, 0, 0, 1], [0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
      [0xca, 0, 0, 0, 0], [0xcb, 0, 0, 0, 0, 0, 0, 0], [0xa2, 0xff, 0xfe], [0xa3, 0x61], [0xd9, 2, 0x61, 0x62], [0xc4, 1, 7], [0xc4, 2, 7],
      [0x92, 1, 2], [0x92, 1], [0x81, 0xa1, 0x61, 1], [0x81, 1, 2], [0x81, 0xc0, 2], [0x81, 0x91, 1, 2], [0x81, 0x80, 2], [0x81, 0xca, 0, 0, 0, 0, 2],
      [0x81, 0xa9, ...Buffer.from('__proto__'), 1], [0xd4, 1, 0], [0xd6, 0xff, 0, 0, 0, 0], [0xc7, 1, 5, 0], [0x01, 0x02], [0x90, 0xc0],
      [...Array(40).fill(0x91), 1], [...Array(70).fill(0x91), 1], [0xdc, 0, 2, 1, 2], [0xde, 0, 1, 0xa1, 0x61, 0xc3], [0xdd, 0xff, 0xff, 0xff, 0xff],
    ];
    for (const c of cases) {
      const [blob, offsets] = one(c);
      assert.equal(accepts(blob, offsets), reference(blob, offsets), `bytes ${Buffer.from(c).toString('hex')}`);
    }
  });

  it('agrees with decoding on random values, truncations and mutations', () => {
    const r = prng(14);
    const value = (depth: number): unknown => {
      const t = Math.floor(r() * (depth > 3 ? 6 : 9));
      if (t === 0) return Math.floor((r() - 0.5) * 2 ** (1 + Math.floor(r() * 40)));
      if (t === 1) return r() * 1e6;
      if (t === 2) return 'sé🙂x'.repeat(Math.floor(r() * 12)).slice(0, Math.floor(r() * 40));
      if (t === 3) return r() < 0.5;
      if (t === 4) return null;
      if (t === 5) return new Uint8Array(Math.floor(r() * 5)).fill(0xc5);
      if (t === 6) return Array.from({ length: Math.floor(r() * 4) }, () => value(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = 0; i < r() * 4; i++) o[`k${Math.floor(r() * 100)}`] = value(depth + 1);
      return o;
    };
    let rejected = 0;
    for (let round = 0; round < 3000; round++) {
      const packed = Uint8Array.from(packr.pack(value(0)));
      let bytes = packed;
      const m = r();
      if (m < 0.25) bytes = packed.subarray(0, Math.floor(r() * packed.length) || 1); // truncated
      else if (m < 0.5) {
        bytes = packed.slice();
        bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256); // one byte changed
      } else if (m < 0.6) bytes = Uint8Array.from([...packed, Math.floor(r() * 256)]); // trailing byte
      const [blob, offsets] = one(bytes);
      const ref = reference(blob, offsets);
      if (!ref) rejected++;
      assert.equal(accepts(blob, offsets), ref, `bytes ${Buffer.from(bytes).toString('hex')}`);
    }
    assert.ok(rejected > 300, `the mutations produced bad items (${rejected})`);
  });

  it('names the bad item of a batch', () => {
    const enc = encodeMetadata(['a', 'b', 'c'], 3);
    const blob = Uint8Array.from([...enc.blob.subarray(0, 4), 0xd4, 1, 0]);
    const offsets = Uint32Array.of(0, 2, 4, 7);
    assert.throws(() => validateMetadata(blob, offsets, 3), (e: unknown) => e instanceof ValidationError && /metadata\[2\]/.test(e.message));
  });
});
