import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  cfgExtra,
  defaultIndexCfg,
  indexCfgToJSON,
  inferNumCentroids,
  loadIndexCfgFile,
  parseIndexCfg,
  resolveIndexSpec,
  type IndexCfg,
} from '../../src/config/index.js';
import { GpuUnavailableError, ValidationError } from '../../src/errors.js';

/** Asserts fn throws a ValidationError whose field is `field` (and whose message names it). */
function throwsValidation(fn: () => unknown, field: string, messagePart?: RegExp | string): ValidationError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ValidationError, `expected ValidationError for ${field}, got ${String(caught)}`);
  assert.equal(caught.field, field);
  assert.match(caught.message, new RegExp(`invalid ${field.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:`));
  if (messagePart !== undefined) {
    if (typeof messagePart === 'string') assert.ok(caught.message.includes(messagePart), caught.message);
    else assert.match(caught.message, messagePart);
  }
  return caught;
}

describe('IndexCfg defaults', () => {
  test('match the original', () => {
    const cfg = defaultIndexCfg();
    assert.deepEqual(cfg, {
      indexBuilderType: null,
      faissFactory: null,
      dim: 768,
      trainNum: 0,
      trainRatio: 1.0,
      centroids: 0,
      metric: 'dot',
      nprobe: 1,
      inferCentroids: false,
      bufferBsz: 50000,
      saveIntervalSec: -1,
      indexStorageDir: null,
      customMetaIdIdx: 0,
      durability: 'fsync',
      trainMode: 'shared', // dfaiss's own: the original trains per shard
      indexedFields: [], // dfaiss's own (issue 17): payload indexes for filters
      extra: {},
    } satisfies IndexCfg);
    assert.deepEqual(parseIndexCfg({}), cfg);
    assert.deepEqual(parseIndexCfg(undefined), cfg);
  });

  test('indexed_fields: dot paths, round-tripped through cfg.json; bad paths and duplicates refused', () => {
    const cfg = parseIndexCfg({ dim: 8, indexed_fields: ['lang', 'meta.year'] });
    assert.deepEqual(cfg.indexedFields, ['lang', 'meta.year']);
    assert.deepEqual(parseIndexCfg(JSON.parse(indexCfgToJSON(cfg))).indexedFields, ['lang', 'meta.year']);
    for (const bad of [['$id'], ['a..b'], ['a', 'a'], 'lang', [1]]) assert.throws(() => parseIndexCfg({ dim: 8, indexedFields: bad }), /indexedFields/, JSON.stringify(bad));
  });

  test('known extras default like the original', () => {
    const cfg = defaultIndexCfg();
    assert.equal(cfgExtra(cfg, 'codeSize'), 64);
    assert.equal(cfgExtra(cfg, 'bitsPerVector'), 8);
    assert.equal(cfgExtra(cfg, 'storeN'), 128);
    assert.equal(cfgExtra(cfg, 'efConstruction'), 100);
  });

  test('defaultIndexCfg applies and validates overrides, without sharing state', () => {
    const a = defaultIndexCfg({ dim: 64, extra: { codeSize: 8 } });
    assert.equal(a.dim, 64);
    assert.equal(a.extra.codeSize, 8);
    a.extra.x = 1;
    assert.deepEqual(defaultIndexCfg().extra, {});
    throwsValidation(() => defaultIndexCfg({ dim: -1 }), 'dim');
  });
});

describe('parseIndexCfg', () => {
  test('reads the original snake_case JSON, coercing numbers given as strings', () => {
    const cfg = parseIndexCfg({
      index_builder_type: 'ivf_simple',
      faiss_factory: null,
      dim: '128',
      train_num: '10000',
      train_ratio: '0.5',
      centroids: '64',
      metric: 'l2',
      nprobe: '12',
      infer_centroids: 'true',
      buffer_bsz: '1000',
      save_interval_sec: '-1',
      index_storage_dir: '/data/idx',
      custom_meta_id_idx: '2',
      train_mode: 'per-shard',
      durability: 'os',
    });
    assert.equal(cfg.indexBuilderType, 'ivf_simple');
    assert.equal(cfg.dim, 128);
    assert.equal(cfg.trainNum, 10000);
    assert.equal(cfg.trainRatio, 0.5);
    assert.equal(cfg.centroids, 64);
    assert.equal(cfg.metric, 'l2');
    assert.equal(cfg.nprobe, 12);
    assert.equal(cfg.inferCentroids, true);
    assert.equal(cfg.bufferBsz, 1000);
    assert.equal(cfg.saveIntervalSec, -1);
    assert.equal(cfg.indexStorageDir, '/data/idx');
    assert.equal(cfg.customMetaIdIdx, 2);
    assert.equal(cfg.trainMode, 'per-shard');
    assert.equal(cfg.durability, 'os');
    assert.deepEqual(cfg.extra, {});
  });

  test('reads camelCase and is idempotent', () => {
    const cfg = parseIndexCfg({ indexBuilderType: 'hnswsq', metric: 'l2', nprobe: 64, extra: { storeN: 32 } });
    assert.equal(cfg.indexBuilderType, 'hnswsq');
    assert.equal(cfg.nprobe, 64);
    assert.equal(cfg.extra.storeN, 32);
    assert.deepEqual(parseIndexCfg(cfg), cfg);
  });

  test('unknown keys go to extra in camelCase; known extras are coerced', () => {
    const cfg = parseIndexCfg({ code_size: '16', bits_per_vector: 4, store_n: '48', ef_construction: '200', my_tag: 'x', Weird: 1 });
    assert.deepEqual(cfg.extra, { codeSize: 16, bitsPerVector: 4, storeN: 48, efConstruction: 200, myTag: 'x', Weird: 1 });
    // Hand-built configs may still use snake keys in extra.
    assert.equal(cfgExtra({ extra: { code_size: 32 } }, 'codeSize'), 32);
  });

  test("flattens the nested 'extra' of the original's saved cfg.json", () => {
    const cfg = parseIndexCfg({ dim: 64, extra: { code_size: 16, extra: { store_n: 8 } } });
    assert.deepEqual(cfg.extra, { codeSize: 16, storeN: 8 });
  });

  test('booleans may be strings or 0/1', () => {
    assert.equal(parseIndexCfg({ infer_centroids: 'False' }).inferCentroids, false);
    assert.equal(parseIndexCfg({ infer_centroids: 1 }).inferCentroids, true);
    assert.equal(parseIndexCfg({ inferCentroids: true }).inferCentroids, true);
  });

  test('accepts a {centroids} placeholder in faiss_factory', () => {
    assert.equal(parseIndexCfg({ faiss_factory: 'PCA64,IVF{centroids},PQ16' }).faissFactory, 'PCA64,IVF{centroids},PQ16');
  });

  const bad: Array<[string, Record<string, unknown>, string, string?]> = [
    ['dim 0', { dim: 0 }, 'dim', 'positive integer'],
    ['dim fraction', { dim: 1.5 }, 'dim', 'positive integer'],
    ['dim non-numeric string', { dim: '768d' }, 'dim', 'positive integer'],
    ['dim null', { dim: null }, 'dim'],
    ['camel field name kept', { trainNum: -1 }, 'trainNum', '>= 0'],
    ['train_num negative', { train_num: '-5' }, 'train_num', '>= 0'],
    ['centroids negative', { centroids: -1 }, 'centroids', '>= 0'],
    ['centroids fraction', { centroids: '2.5' }, 'centroids', 'integer'],
    ['train_ratio 0', { train_ratio: 0 }, 'train_ratio', '(0, 1]'],
    ['train_ratio > 1', { trainRatio: '1.5' }, 'trainRatio', '(0, 1]'],
    ['metric', { metric: 'manhattan' }, 'metric', "'dot', 'l2' or 'cosine'"],
    ['builder type', { index_builder_type: 'ivf' }, 'index_builder_type', 'flat, ivf_simple, knnlm, hnswsq, ivfsq, ivf_gpu'],
    ['nprobe 0', { nprobe: 0 }, 'nprobe', '>= 1'],
    ['buffer_bsz 0', { buffer_bsz: '0' }, 'buffer_bsz', '>= 1'],
    ['empty factory', { faiss_factory: '' }, 'faiss_factory', 'non-empty'],
    ['blank factory', { faissFactory: '  ' }, 'faissFactory', 'non-empty'],
    ['misspelt placeholder', { faiss_factory: 'IVF{centroid},Flat' }, 'faiss_factory', '{centroids}'],
    ['stray brace', { faiss_factory: 'IVF{centroids}},Flat' }, 'faiss_factory'],
    ['factory not a string', { faiss_factory: 42 }, 'faiss_factory'],
    ['infer_centroids', { infer_centroids: 'maybe' }, 'infer_centroids', 'boolean'],
    ['save_interval_sec', { save_interval_sec: 'soon' }, 'save_interval_sec'],
    ['index_storage_dir', { index_storage_dir: '' }, 'index_storage_dir'],
    ['custom_meta_id_idx', { custom_meta_id_idx: -1 }, 'custom_meta_id_idx'],
    ['durability', { durability: 'always' }, 'durability', "'fsync', 'os' or 'none'"],
    ['train_mode', { train_mode: 'global' }, 'train_mode', "'per-shard' or 'shared'"],
    ['code_size', { code_size: 0 }, 'code_size', 'positive integer'],
    ['bits_per_vector', { bits_per_vector: 64 }, 'bits_per_vector', '[1, 16]'],
    ['nested extra', { extra: { store_n: 'many' } }, 'extra.store_n'],
    ['ef_construction', { efConstruction: -3 }, 'efConstruction'],
    ['extra not an object', { extra: [1] }, 'extra'],
    ['conflicting spellings', { train_num: 1, trainNum: 2 }, 'trainNum', "'train_num'"],
    ['conflicting extra spellings', { code_size: 8, extra: { codeSize: 16 } }, 'extra.codeSize', 'give it once'],
  ];
  for (const [name, input, field, part] of bad) {
    test(`rejects ${name}, naming ${field}`, () => {
      const err = throwsValidation(() => parseIndexCfg(input), field, part);
      assert.equal(err.code, 'VALIDATION');
    });
  }

  test('the same value under both spellings is fine', () => {
    assert.equal(parseIndexCfg({ train_num: 5, trainNum: '5' }).trainNum, 5);
  });

  test('rejects non-objects', () => {
    throwsValidation(() => parseIndexCfg('dim=5'), 'index config');
    throwsValidation(() => parseIndexCfg([]), 'index config');
  });
});

describe('config files', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfaiss-cfg-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('file -> cfg -> file -> cfg round trip', async () => {
    // The shape of the original's scripts/idx_cfg.json: strings for numbers, extra keys.
    const original = {
      index_builder_type: 'knnlm',
      dim: '768',
      train_num: '1000000',
      centroids: '4096',
      metric: 'l2',
      nprobe: '32',
      code_size: '64',
      bits_per_vector: '8',
      buffer_bsz: '100000',
      index_storage_dir: '/checkpoint/idx',
      tag: { owner: 'me' },
    };
    const p1 = join(dir, 'cfg1.json');
    await writeFile(p1, JSON.stringify(original));
    const cfg1 = await loadIndexCfgFile(p1);
    assert.equal(cfg1.dim, 768);
    assert.equal(cfg1.extra.codeSize, 64);

    const text = indexCfgToJSON(cfg1);
    const snake = JSON.parse(text) as Record<string, unknown>;
    // What the original's IndexCfg(**json) reads: snake keys, extras at top level.
    assert.equal(snake.index_builder_type, 'knnlm');
    assert.equal(snake.train_num, 1000000);
    assert.equal(snake.code_size, 64);
    assert.deepEqual(snake.tag, { owner: 'me' });
    assert.equal(snake.codeSize, undefined);
    assert.equal(snake.extra, undefined);
    assert.deepEqual(Object.keys(snake), Object.keys(snake).sort());

    const p2 = join(dir, 'cfg2.json');
    await writeFile(p2, text);
    const cfg2 = await loadIndexCfgFile(p2);
    assert.deepEqual(cfg2, cfg1);
    assert.equal(indexCfgToJSON(cfg2), await readFile(p2, 'utf8'));
  });

  test('bad JSON and missing files are reported with the path', async () => {
    const p = join(dir, 'broken.json');
    await writeFile(p, '{"dim": 5,');
    await assert.rejects(loadIndexCfgFile(p), (err: unknown) => err instanceof ValidationError && err.message.includes(p));
    await assert.rejects(loadIndexCfgFile(join(dir, 'nope.json')), /cannot read index config file .*nope\.json/);
    const q = join(dir, 'bad-dim.json');
    await writeFile(q, '{"dim": "-3"}');
    await assert.rejects(loadIndexCfgFile(q), (err: unknown) => err instanceof ValidationError && err.field === 'dim');
  });
});

describe('resolveIndexSpec', () => {
  const cfg = (o: Partial<IndexCfg>): IndexCfg => defaultIndexCfg({ dim: 64, ...o });

  test('flat honours the metric', () => {
    assert.deepEqual(resolveIndexSpec(cfg({ indexBuilderType: 'flat' }), 10), { factory: 'Flat', metric: 'dot', params: [], centroids: null });
    assert.equal(resolveIndexSpec(cfg({ indexBuilderType: 'flat', metric: 'l2' }), 0).metric, 'l2');
  });

  test('ivf_simple', () => {
    assert.deepEqual(resolveIndexSpec(cfg({ indexBuilderType: 'ivf_simple', centroids: 64, nprobe: 8, metric: 'l2' }), 5000), {
      factory: 'IVF64,Flat',
      metric: 'l2',
      params: [['nprobe', 8]],
      centroids: 64,
    });
  });

  test('knnlm uses code_size and bits_per_vector', () => {
    const spec = resolveIndexSpec(cfg({ indexBuilderType: 'knnlm', centroids: 32, extra: { codeSize: 16, bitsPerVector: 6 } }), 5000);
    assert.deepEqual(spec, { factory: 'IVF32,PQ16x6np', metric: 'dot', params: [['nprobe', 1]], centroids: 32 });
    assert.equal(resolveIndexSpec(cfg({ indexBuilderType: 'knnlm', centroids: 32 }), 5000).factory, 'IVF32,PQ64x8np');
  });

  test('knnlm checks code_size against dim and the training set against 2^bits', () => {
    throwsValidation(() => resolveIndexSpec(cfg({ indexBuilderType: 'knnlm', centroids: 4, extra: { codeSize: 48 } }), 5000), 'code_size', 'divisor of dim (64)');
    throwsValidation(() => resolveIndexSpec(cfg({ indexBuilderType: 'knnlm', centroids: 4 }), 200), 'train_num', 'at least 256');
  });

  test('hnswsq forces l2 and maps nprobe to efSearch', () => {
    assert.deepEqual(resolveIndexSpec(cfg({ indexBuilderType: 'hnswsq', nprobe: 40 }), 0), {
      factory: 'HNSW128,SQ8',
      metric: 'l2',
      params: [
        ['efSearch', 40],
        ['efConstruction', 100],
      ],
      centroids: null,
    });
    const spec = resolveIndexSpec(cfg({ indexBuilderType: 'hnswsq', metric: 'l2', extra: { storeN: 16, efConstruction: 64 } }), 0);
    assert.equal(spec.factory, 'HNSW16,SQ8');
    assert.deepEqual(spec.params, [
      ['efSearch', 1],
      ['efConstruction', 64],
    ]);
  });

  test('ivfsq', () => {
    assert.deepEqual(resolveIndexSpec(cfg({ indexBuilderType: 'ivfsq', centroids: 10, nprobe: 3 }), 100), {
      factory: 'IVF10,SQfp16',
      metric: 'dot',
      params: [['nprobe', 3]],
      centroids: 10,
    });
  });

  test('ivf_gpu fails clearly without GPU support', () => {
    const c = cfg({ indexBuilderType: 'ivf_gpu', faissFactory: 'IVF{centroids},Flat', centroids: 8 });
    assert.throws(
      () => resolveIndexSpec(c, 1000),
      (err: unknown) =>
        err instanceof GpuUnavailableError &&
        err.code === 'GPU_UNAVAILABLE' &&
        /no GPU support|has none/.test(err.message) &&
        err.message.includes('1.7.3') &&
        err.message.includes('ivf_simple'),
    );
    // With GPUs it is the factory string (CPU index, GPU clustering is the binding's job).
    assert.equal(resolveIndexSpec(c, 1000, { gpuAvailable: true }).factory, 'IVF8,Flat');
  });

  test('faiss_factory with and without {centroids}', () => {
    assert.deepEqual(resolveIndexSpec(cfg({ faissFactory: 'PCA32,IVF{centroids},Flat', centroids: 16, nprobe: 4, metric: 'l2' }), 1000), {
      factory: 'PCA32,IVF16,Flat',
      metric: 'l2',
      params: [['nprobe', 4]],
      centroids: 16,
    });
    assert.deepEqual(resolveIndexSpec(cfg({ faissFactory: 'HNSW32' }), 10), { factory: 'HNSW32', metric: 'dot', params: [], centroids: null });
    assert.deepEqual(resolveIndexSpec(cfg({ faissFactory: 'IVF16,PQ8' }), 1000).params, [['nprobe', 1]]);
    // A builder type wins over faiss_factory, as in the original.
    assert.equal(resolveIndexSpec(cfg({ indexBuilderType: 'flat', faissFactory: 'HNSW32' }), 10).factory, 'Flat');
  });

  test('no builder type and no factory is an error', () => {
    throwsValidation(() => resolveIndexSpec(cfg({}), 10), 'index_builder_type', 'faiss_factory');
  });

  test('more centroids than training vectors is an error', () => {
    throwsValidation(
      () => resolveIndexSpec(cfg({ indexBuilderType: 'ivf_simple', centroids: 100 }), 99),
      'centroids',
      'raise train_num or lower centroids',
    );
    assert.equal(resolveIndexSpec(cfg({ indexBuilderType: 'ivf_simple', centroids: 100 }), 100).centroids, 100);
    throwsValidation(() => resolveIndexSpec(cfg({ faissFactory: 'IVF{centroids},Flat', centroids: 50 }), 10), 'centroids');
    // A literal list count in the factory string is checked too.
    throwsValidation(() => resolveIndexSpec(cfg({ faissFactory: 'PCA32,IVF4096,Flat' }), 1000), 'faiss_factory', 'raise train_num');
    // Inferred from all buffered vectors (as the original), then checked against the training set.
    throwsValidation(
      () => resolveIndexSpec(cfg({ indexBuilderType: 'ivfsq' }), 10_000, { totalVectors: 5_000_000 }),
      'centroids',
      'inferred from 5000000 vectors',
    );
  });

  test('rejects a bad vector count', () => {
    throwsValidation(() => resolveIndexSpec(cfg({ indexBuilderType: 'flat' }), -1), 'numTrainVectors');
    throwsValidation(() => resolveIndexSpec(cfg({ indexBuilderType: 'flat' }), 1.5), 'numTrainVectors');
  });
});

describe('centroid inference', () => {
  test('boundaries of the original heuristic', () => {
    assert.equal(inferNumCentroids(0), 1);
    assert.equal(inferNumCentroids(1), 2);
    assert.equal(inferNumCentroids(3), 3); // int(2*sqrt(3)) = int(3.46)
    assert.equal(inferNumCentroids(100), 20);
    assert.equal(inferNumCentroids(10_000), 200);
    assert.equal(inferNumCentroids(999_999), 1999); // int(1999.999)
    assert.equal(inferNumCentroids(1_000_000), 65536);
    assert.equal(inferNumCentroids(9_999_999), 65536);
    assert.equal(inferNumCentroids(10_000_000), 262144);
    assert.equal(inferNumCentroids(99_999_999), 262144);
    assert.equal(inferNumCentroids(100_000_000), 1048576);
    assert.equal(inferNumCentroids(5e9), 1048576);
  });

  test('applies when centroids is 0 or infer_centroids is set', () => {
    const c = (o: Partial<IndexCfg>) => resolveIndexSpec(defaultIndexCfg({ dim: 8, indexBuilderType: 'ivf_simple', ...o }), 10_000);
    assert.equal(c({}).factory, 'IVF200,Flat');
    assert.equal(c({ centroids: 50 }).factory, 'IVF50,Flat');
    assert.equal(c({ centroids: 50, inferCentroids: true }).factory, 'IVF200,Flat');
    const f = resolveIndexSpec(defaultIndexCfg({ dim: 8, faissFactory: 'IVF{centroids},SQ8' }), 2000, { totalVectors: 40_000 });
    assert.equal(f.factory, 'IVF400,SQ8');
    assert.equal(f.centroids, 400);
  });
});

describe("unknownKeys 'error' (the CLI's --cfg files)", () => {
  const strict = (input: unknown) => parseIndexCfg(input, { unknownKeys: 'error', source: 'idx.json' });
  test('a misspelled top-level key is refused with the closest key, in the same spelling', () => {
    for (const [typo, meant] of [['metrik', 'metric'], ['nprob', 'nprobe'], ['centroid', 'centroids'], ['trainNm', 'trainNum'], ['train_nm', 'train_num'], ['codesize', 'code_size'], ['index_builder', 'index_builder_type']] as const) {
      assert.throws(() => strict({ [typo]: 1 }), (e: unknown) => e instanceof ValidationError && e.field === typo && e.message.startsWith(`unknown index config key '${typo}' in idx.json: did you mean '${meant}'?`), typo);
    }
    assert.throws(() => strict({ zzzz: 1 }), (e: unknown) => e instanceof ValidationError && /^unknown index config key 'zzzz' in idx\.json \(known keys: index_builder_type, /.test(e.message));
  });
  test('fields, known extras in both spellings and keys inside an explicit extra object are accepted', () => {
    const cfg = strict({ index_builder_type: 'knnlm', dim: '64', code_size: '16', bits_per_vector: 4, storeN: 8, ef_construction: 50, extra: { owner: 'me' } });
    assert.deepEqual(cfg.extra, { codeSize: 16, bitsPerVector: 4, storeN: 8, efConstruction: 50, owner: 'me' });
  });
  test('the default stays lenient (saved cfg.json files carry custom keys at top level)', () => {
    assert.deepEqual(parseIndexCfg({ metrik: 'l2' }).extra, { metrik: 'l2' });
  });
});
