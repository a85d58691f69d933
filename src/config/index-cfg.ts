/**
 * IndexCfg: how one logical index is built, trained and stored. Mirrors the Python
 * original's IndexCfg field for field (same defaults), in camelCase, and reads and
 * writes the original's snake_case JSON so existing config files keep working.
 */
import type { Metric } from '../vectors.js';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { DfaissError, ValidationError } from '../errors.js';

/** Named index recipes of the original (see resolveIndexSpec for what each builds). */
export const INDEX_BUILDER_TYPES = ['flat', 'ivf_simple', 'knnlm', 'hnswsq', 'ivfsq', 'ivf_gpu'] as const;
export type IndexBuilderType = (typeof INDEX_BUILDER_TYPES)[number];

/**
 * 'dot' and 'l2' as FAISS has them (FaissMetric); 'cosine' (issue 16): vectors and queries are
 * L2-normalised on the server and searched by inner product, scores are cosine similarities.
 */
export const INDEX_METRICS = ['dot', 'l2', 'cosine'] as const satisfies readonly Metric[];


export const DURABILITY_MODES = ['fsync', 'os', 'none'] as const;
export type Durability = (typeof DURABILITY_MODES)[number];

export const TRAIN_MODES = ['per-shard', 'shared'] as const;
export type TrainMode = (typeof TRAIN_MODES)[number];

export interface IndexCfg {
  /**
   * Named recipe: 'flat', 'ivf_simple', 'knnlm', 'hnswsq', 'ivfsq' or 'ivf_gpu'.
   * Takes precedence over faissFactory; null means "use faissFactory".
   * @default null
   */
  indexBuilderType: IndexBuilderType | null;
  /**
   * FAISS index_factory string, e.g. "IVF{centroids},PQ16". `{centroids}` is replaced
   * by `centroids` (or the inferred count). Used when indexBuilderType is null.
   * @default null
   */
  faissFactory: string | null;
  /**
   * Vector dimension.
   * @default 768
   */
  dim: number;
  /**
   * Buffered vectors that trigger training, and the training set size; 0 = train only
   * when asked (syncTrain). Counted across the cluster with trainMode 'shared', per
   * server with 'per-shard'.
   * @default 0
   */
  trainNum: number;
  /**
   * Share of the buffered vectors used for training when trainNum is 0, in (0, 1].
   * @default 1.0
   */
  trainRatio: number;
  /**
   * IVF list count; 0 = infer from the data size (see inferNumCentroids).
   * @default 0
   */
  centroids: number;
  /**
   * Similarity: 'dot' (inner product) or 'l2'.
   * @default 'dot'
   */
  metric: Metric;
  /**
   * IVF lists probed per query; for HNSW it is the search breadth efSearch.
   * @default 1
   */
  nprobe: number;
  /**
   * Infer the centroid count from the data size even when `centroids` is set.
   * @default false
   */
  inferCentroids: boolean;
  /**
   * Vectors added to FAISS per chunk when the buffer is moved into a trained index.
   * @default 50000
   */
  bufferBsz: number;
  /**
   * Autosave period in seconds; 0 or less disables autosave.
   * @default -1
   */
  saveIntervalSec: number;
  /**
   * Folder the server saves this index under; null = the server's storage dir.
   * @default null
   */
  indexStorageDir: string | null;
  /**
   * Position of the user id inside each vector's metadata (for getIds).
   * @default 0
   */
  customMetaIdIdx: number;
  /**
   * What an acknowledged add survives: 'fsync' (written to the write-ahead log and
   * fsynced: power loss), 'os' (written to the log, not fsynced: a process crash), 'none'
   * (no log: only saved snapshots survive).
   * @default 'fsync'
   */
  durability: Durability;
  /**
   * How IVF indexes are trained. 'shared': once the cluster buffers trainNum vectors, the
   * client trains one index on a sample drawn across shards (on one server, with all its
   * cores) and installs its centroids on every shard: the same centroids everywhere, a
   * 1/servers share of the training work, and training overlaps the rest of the ingest.
   * It applies to types whose training is their centroids (ivf_simple, ivfsq, factory
   * strings like "IVF{centroids},Flat"); others (knnlm, hnswsq, PQ/SQ8/transform factory
   * strings) and 'per-shard' (the original's behaviour) train on every server when it
   * buffers trainNum vectors. Flat indexes need no training.
   * @default 'shared'
   */
  trainMode: TrainMode;
  /**
   * Metadata fields (dot paths, e.g. 'lang' or 'meta.year') with a payload index on every
   * server, so filters on them (docs/filters.md) are answered from per-value lists instead
   * of decoding each record's metadata per query. Kept in memory, rebuilt from the stored
   * metadata after a restart. Pays for fields that filters test often, with few distinct
   * values per field (categories, years); see the README's filter figures.
   * @default []
   */
  indexedFields: string[];
  /**
   * Any other keys, camelCase. Known ones: codeSize (64) and bitsPerVector (8) for
   * knnlm; storeN (128) and efConstruction (100) for hnswsq. Read with `cfgExtra`.
   * @default {}
   */
  extra: Record<string, unknown>;
}

/** Defaults of the known `extra` keys (the original reads them with the same fallbacks). */
export const EXTRA_DEFAULTS = { codeSize: 64, bitsPerVector: 8, storeN: 128, efConstruction: 100 } as const;
export type KnownExtraKey = keyof typeof EXTRA_DEFAULTS;

const DEFAULTS: Readonly<Omit<IndexCfg, 'extra'>> = Object.freeze({
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
  trainMode: 'shared',
  indexedFields: [],
});

type FieldName = Exclude<keyof IndexCfg, 'extra'>;

// ---------------------------------------------------------------------------
// Coercion: config files in the wild carry numbers and booleans as strings.

const NUMERIC_STRING = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

function toNumber(v: unknown): unknown {
  return typeof v === 'string' && NUMERIC_STRING.test(v) ? Number(v) : v;
}

function toBoolean(v: unknown): unknown {
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (s === 'true' || s === '1') return true;
    if (s === 'false' || s === '0') return false;
  }
  // Python configs sometimes use 0/1 for flags.
  if (v === 0 || v === 1) return v === 1;
  return v;
}

const int = () => z.preprocess(toNumber, z.number().int().max(Number.MAX_SAFE_INTEGER).min(Number.MIN_SAFE_INTEGER));

// A `{` is only allowed as the `{centroids}` placeholder; anything else is a typo
// (e.g. "{centroid}") that FAISS would reject with a far less helpful message.
function factoryOk(s: string): boolean {
  return s.trim() !== '' && !/[{}]/.test(s.replaceAll('{centroids}', ''));
}

/** Per field: zod schema plus the human-readable expectation used in ValidationError. */
const FIELDS: { [K in FieldName]: { snake: string; schema: z.ZodType<IndexCfg[K]>; expected: string } } = {
  indexBuilderType: {
    snake: 'index_builder_type',
    schema: z.enum(INDEX_BUILDER_TYPES).nullable(),
    expected: `one of ${INDEX_BUILDER_TYPES.join(', ')} (or null to use faiss_factory)`,
  },
  faissFactory: {
    snake: 'faiss_factory',
    schema: z.string().refine(factoryOk).nullable(),
    expected: 'a non-empty FAISS index_factory string such as "IVF{centroids},Flat"; braces only as the {centroids} placeholder (or null)',
  },
  dim: { snake: 'dim', schema: int().pipe(z.number().positive()), expected: 'a positive integer' },
  trainNum: { snake: 'train_num', schema: int().pipe(z.number().nonnegative()), expected: 'an integer >= 0 (0 = train on request)' },
  trainRatio: {
    snake: 'train_ratio',
    schema: z.preprocess(toNumber, z.number().gt(0).lte(1)),
    expected: 'a number in (0, 1]',
  },
  centroids: { snake: 'centroids', schema: int().pipe(z.number().nonnegative()), expected: 'an integer >= 0 (0 = infer)' },
  metric: { snake: 'metric', schema: z.enum(INDEX_METRICS), expected: "'dot', 'l2' or 'cosine'" },
  nprobe: { snake: 'nprobe', schema: int().pipe(z.number().min(1)), expected: 'an integer >= 1' },
  inferCentroids: { snake: 'infer_centroids', schema: z.preprocess(toBoolean, z.boolean()), expected: 'a boolean' },
  bufferBsz: { snake: 'buffer_bsz', schema: int().pipe(z.number().min(1)), expected: 'an integer >= 1' },
  saveIntervalSec: {
    snake: 'save_interval_sec',
    schema: z.preprocess(toNumber, z.number().finite()),
    expected: 'a number of seconds (0 or less = no autosave)',
  },
  indexStorageDir: { snake: 'index_storage_dir', schema: z.string().min(1).nullable(), expected: 'a non-empty path (or null)' },
  customMetaIdIdx: { snake: 'custom_meta_id_idx', schema: int().pipe(z.number().nonnegative()), expected: 'an integer >= 0' },
  durability: { snake: 'durability', schema: z.enum(DURABILITY_MODES), expected: "'fsync', 'os' or 'none'" },
  trainMode: { snake: 'train_mode', schema: z.enum(TRAIN_MODES), expected: "'per-shard' or 'shared'" },
  indexedFields: {
    snake: 'indexed_fields',
    schema: z.array(z.string().regex(/^[^.$][^.]*(\.[^.$][^.]*)*$/).max(256)).max(64).refine((a) => new Set(a).size === a.length),
    expected: 'an array of at most 64 distinct metadata field paths such as "lang" or "meta.year" (dot-separated names, none starting with $)',
  },
};

const EXTRA_SCHEMAS: Record<KnownExtraKey, { schema: z.ZodType<number>; expected: string }> = {
  codeSize: { schema: int().pipe(z.number().min(1)), expected: 'a positive integer (PQ sub-quantizers, must divide dim)' },
  bitsPerVector: { schema: int().pipe(z.number().min(1).max(16)), expected: 'an integer in [1, 16] (bits per PQ code)' },
  storeN: { schema: int().pipe(z.number().min(2)), expected: 'an integer >= 2 (HNSW links per node)' },
  efConstruction: { schema: int().pipe(z.number().min(1)), expected: 'a positive integer' },
};

const FIELD_BY_KEY = new Map<string, FieldName>();
for (const [camel, f] of Object.entries(FIELDS) as Array<[FieldName, { snake: string }]>) {
  FIELD_BY_KEY.set(camel, camel);
  FIELD_BY_KEY.set(f.snake, camel);
}

// Only names that convert losslessly both ways are renamed, so a key survives
// parse -> indexCfgToJSON -> parse unchanged (code_size <-> codeSize, store_n <-> storeN).
const SNAKE_KEY = /^[a-z][a-z0-9]*(_[a-z][a-z0-9]*)+$/;
const CAMEL_KEY = /^[a-z][a-z0-9]*([A-Z][a-z0-9]*)+$/;

function snakeToCamel(key: string): string {
  return SNAKE_KEY.test(key) ? key.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()) : key;
}

function camelToSnake(key: string): string {
  return CAMEL_KEY.test(key) ? key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) : key;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function sameValue(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

// ---------------------------------------------------------------------------

export interface ParseIndexCfgOptions {
  /**
   * Top-level keys that are neither fields nor known extras (code_size, bits_per_vector,
   * store_n, ef_construction): 'extra' keeps them in `extra` (camelCase); 'error' refuses
   * them with a did-you-mean (a typo like "nprob" must not build an index with defaults).
   * Keys inside an explicit `extra` object are always kept. @default 'extra'
   */
  unknownKeys?: 'extra' | 'error';
  /** Names the source in errors, e.g. the config file's path. */
  source?: string;
}

/** Every key a config may have at top level, in both spellings. */
const KNOWN_KEYS: readonly string[] = [
  ...FIELD_BY_KEY.keys(),
  ...Object.keys(EXTRA_DEFAULTS).flatMap((k) => [k, camelToSnake(k)]),
  'extra',
];

/** Edit distance (Levenshtein), for did-you-mean suggestions. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The known key closest to `key` when it is close enough to be a typo of it, in the same spelling (snake_case or camelCase). */
export function suggestCfgKey(key: string): string | undefined {
  const camel = /[A-Z]/.test(key);
  let best: { name: string; d: number } | undefined;
  for (const name of KNOWN_KEYS) {
    if (name === 'extra' || (camel ? name.includes('_') : /[A-Z]/.test(name))) continue;
    // A truncated name ("index_builder") counts as close.
    const prefix = key.length >= 4 && name.toLowerCase().startsWith(key.toLowerCase());
    const d = prefix ? 1 : editDistance(key.toLowerCase(), name.toLowerCase());
    if (!best || d < best.d) best = { name, d };
  }
  return best && best.d <= Math.max(2, Math.floor(key.length / 3)) ? best.name : undefined;
}

/** A top-level key that is no field: a typo would otherwise build the index with a default. */
export class UnknownCfgKeyError extends ValidationError {
  constructor(key: string, source?: string) {
    super(key, 'a known index config key');
    const hint = suggestCfgKey(key);
    const camel = /[A-Z]/.test(key);
    const known = KNOWN_KEYS.filter((k) => k !== 'extra' && (camel ? !k.includes('_') : !/[A-Z]/.test(k)));
    this.message =
      `unknown index config key '${key}'${source ? ` in ${source}` : ''}${hint ? `: did you mean '${hint}'?` : ''}` +
      ` (known keys: ${[...new Set(known)].join(', ')}; custom settings go inside "extra": {...})`;
  }
}

/**
 * Validates and normalizes an index config. Accepts camelCase keys (IndexCfg) and the
 * original's snake_case JSON (index_builder_type, train_num, ...), numbers and booleans
 * given as strings, and a nested `extra` object (the original's saved cfg.json has one).
 * Unknown keys go to `extra` in camelCase (code_size -> extra.codeSize), or are refused
 * with opts.unknownKeys 'error'. Missing fields take their defaults. Throws
 * ValidationError naming the key as given.
 */
export function parseIndexCfg(input: unknown, opts: ParseIndexCfgOptions = {}): IndexCfg {
  if (input === undefined || input === null) return defaultIndexCfg();
  if (!isPlainObject(input)) throw new ValidationError('index config', 'an object of IndexCfg fields', input);

  type Given = { key: string; value: unknown };
  // Every spelling of a name is kept: validated one by one, then required to agree.
  const given = new Map<FieldName, Given[]>();
  const extraGiven = new Map<string, Given[]>();
  const put = <K>(map: Map<K, Given[]>, name: K, key: string, value: unknown): void => {
    const list = map.get(name);
    if (list) list.push({ key, value });
    else map.set(name, [{ key, value }]);
  };

  const collectExtra = (obj: Record<string, unknown>, prefix: string, depth: number): void => {
    for (const [key, value] of Object.entries(obj)) {
      // The original re-saves a loaded cfg as {"extra": {"extra": {...}}}; flatten those.
      if (key === 'extra' && isPlainObject(value) && depth < 8) collectExtra(value, `${prefix}extra.`, depth + 1);
      else if (value !== undefined) put(extraGiven, snakeToCamel(key), prefix + key, value);
    }
  };

  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue;
    const field = FIELD_BY_KEY.get(key);
    if (field) put(given, field, key, value);
    else if (key === 'extra') {
      if (!isPlainObject(value)) throw new ValidationError('extra', 'an object of extra settings', value);
      collectExtra(value, 'extra.', 1);
    } else if (opts.unknownKeys === 'error' && !KNOWN_KEYS.includes(key)) {
      throw new UnknownCfgKeyError(key, opts.source);
    } else collectExtra({ [key]: value }, '', 0);
  }

  const resolve = (list: Given[], spec: { schema: z.ZodType<unknown>; expected: string } | undefined): unknown => {
    let first: { key: string; value: unknown } | undefined;
    for (const { key, value } of list) {
      let parsed = value;
      if (spec) {
        const r = spec.schema.safeParse(value);
        if (!r.success) throw new ValidationError(key, spec.expected, value);
        parsed = r.data;
      }
      if (first && !sameValue(first.value, parsed)) {
        throw new ValidationError(key, `the same value as '${first.key}' (${JSON.stringify(first.value)}): give it once`, value);
      }
      first ??= { key, value: parsed };
    }
    return first?.value;
  };

  const cfg: IndexCfg = { ...DEFAULTS, extra: {} };
  for (const [field, list] of given) (cfg as unknown as Record<string, unknown>)[field] = resolve(list, FIELDS[field]);
  for (const [name, list] of extraGiven) {
    cfg.extra[name] = resolve(list, (EXTRA_SCHEMAS as Record<string, { schema: z.ZodType<number>; expected: string }>)[name]);
  }
  return cfg;
}

/** A full config with the original's defaults, plus validated overrides. */
export function defaultIndexCfg(overrides?: Partial<IndexCfg>): IndexCfg {
  return parseIndexCfg({ ...overrides });
}

/** Reads and validates a JSON config file (snake_case or camelCase). */
export async function loadIndexCfgFile(path: string, opts: Pick<ParseIndexCfgOptions, 'unknownKeys'> = {}): Promise<IndexCfg> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new DfaissError(`cannot read index config file ${path}: ${(err as Error).message}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ValidationError(`index config file ${path}`, 'valid JSON', (err as Error).message);
  }
  return parseIndexCfg(json, { ...opts, source: path });
}

/**
 * The snake_case object the Python original reads: every field at top level, extra keys
 * flattened (the original's IndexCfg(**kwargs) puts unknown keys into its `extra`).
 */
export function indexCfgToSnakeObject(cfg: IndexCfg): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(cfg.extra ?? {})) {
    const snake = camelToSnake(key);
    if (value !== undefined && !FIELD_BY_KEY.has(snake) && !FIELD_BY_KEY.has(key)) out[snake] = value;
  }
  for (const field of Object.keys(FIELDS) as FieldName[]) out[FIELDS[field].snake] = cfg[field];
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** JSON text of indexCfgToSnakeObject: sorted keys, 4-space indent, like the original's cfg.json. */
export function indexCfgToJSON(cfg: IndexCfg): string {
  return `${JSON.stringify(indexCfgToSnakeObject(cfg), null, 4)}\n`;
}

/**
 * Reads an extra setting under its camelCase or snake_case name (configs built by hand
 * may use either), falling back to the known default.
 */
export function cfgExtra(cfg: Pick<IndexCfg, 'extra'>, name: KnownExtraKey): number;
export function cfgExtra(cfg: Pick<IndexCfg, 'extra'>, name: string): unknown;
export function cfgExtra(cfg: Pick<IndexCfg, 'extra'>, name: string): unknown {
  const extra = cfg.extra ?? {};
  const value = extra[name] ?? extra[camelToSnake(name)];
  if (name in EXTRA_DEFAULTS) {
    if (value === undefined) return EXTRA_DEFAULTS[name as KnownExtraKey];
    const spec = EXTRA_SCHEMAS[name as KnownExtraKey];
    const r = spec.schema.safeParse(value);
    if (!r.success) throw new ValidationError(camelToSnake(name), spec.expected, value);
    return r.data;
  }
  return value;
}
