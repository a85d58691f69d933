/**
 * Which FAISS search parameters each index type has, and their allowed values. One table
 * for the client (which checks before sending) and the server (which checks again, with
 * the trained index's real nlist). Pure: no native import, so clients never need FAISS.
 *
 * FAISS's ParameterSpace casts every value with int(...) and checks nothing: nprobe 0 or
 * 1e12 is accepted there and makes every later search fail an assertion.
 */
import { ValidationError } from '../errors.js';
import type { IndexCfg } from './index-cfg.js';

/** Largest nprobe when the list count is not known yet (centroids inferred, not trained): the largest inferred count. */
export const MAX_NPROBE_UNKNOWN_NLIST = 1_048_576;
/** Cap on efSearch / efConstruction / quantizer_efSearch: FAISS keeps a heap of that size per query. */
export const MAX_EF = 1_048_576;
/** Cap on k_factor / k_factor_rf: each query fetches k x k_factor candidates to re-rank. */
export const MAX_K_FACTOR = 1024;

export interface SearchParamRule {
  /** FAISS's name. */
  name: string;
  integer: boolean;
  min: number;
  max: number;
  /** What it does, for error messages and docs. */
  about: string;
}

/** The parts of an IndexCfg that decide the index type. */
export type IndexTypeCfg = Pick<IndexCfg, 'indexBuilderType' | 'faissFactory' | 'centroids' | 'inferCentroids'>;

/** What the index type's factory string says about its structure. */
interface Shape {
  ivf: boolean;
  /** IVF with an HNSW coarse quantizer ("IVF4096_HNSW32,..."). */
  hnswQuantizer: boolean;
  /** HNSW graph at the top ("HNSW32", "HNSW32,SQ8"). */
  hnsw: boolean;
  /** PQ codes (IndexPQ or IndexIVFPQ): polysemous threshold ht. */
  pq: boolean;
  /** IVFPQ with re-ranking codes ("IVF..,PQ16+16"): k_factor. */
  pqr: boolean;
  /** Refinement wrapper ("...,RFlat", "...,Refine(...)"): k_factor_rf. */
  refine: boolean;
  /** The factory string was understood; false leaves the name check to FAISS. */
  known: boolean;
}

/** The index_factory string (with "{centroids}" unresolved) an index type builds; null when none is set. */
function factoryOf(cfg: IndexTypeCfg): string | null {
  switch (cfg.indexBuilderType) {
    case 'flat':
      return 'Flat';
    case 'ivf_simple':
      return 'IVF{centroids},Flat';
    case 'knnlm':
      return 'IVF{centroids},PQ8np';
    case 'hnswsq':
      return 'HNSW32,SQ8';
    case 'ivfsq':
      return 'IVF{centroids},SQfp16';
    default:
      return cfg.faissFactory;
  }
}

const TRANSFORM = /^(PCA|PCAR|PCAW|PCAWR|OPQ|RR|L2norm|ITQ|Pad|IDMap2?$)/;

function shapeOf(factory: string): Shape {
  const parts = factory.split(',').map((p) => p.trim());
  const shape: Shape = { ivf: false, hnswQuantizer: false, hnsw: false, pq: false, pqr: false, refine: false, known: true };
  let first = true;
  for (const p of parts) {
    if (TRANSFORM.test(p)) continue;
    if (/^(IVF(\d+|\{centroids\})|IMI\d+x\d+)/.test(p)) {
      shape.ivf = true;
      if (/_HNSW\d*/.test(p)) shape.hnswQuantizer = true;
    } else if (first && /^HNSW\d*(_|$)/.test(p)) {
      shape.hnsw = true;
      if (/_PQ/.test(p)) shape.pq = true;
    } else if (/^PQ\d+/.test(p)) {
      shape.pq = true;
      if (p.includes('+')) shape.pqr = true;
    } else if (/^(RFlat|Refine\()/.test(p)) {
      shape.refine = true;
    } else if (!/^(Flat|SQ\w*|LSH\w*|Residual\w*|NSG\d*|PRQ|RQ|LSQ)/.test(p)) {
      shape.known = false;
    }
    first = false;
  }
  return shape;
}

/** The IVF list count the cfg fixes, or null when it is inferred from the data (or there is no IVF layer). */
export function configuredNlist(cfg: IndexTypeCfg): number | null {
  const factory = factoryOf(cfg);
  if (!factory) return null;
  const literal = /(?:^|,)\s*IVF(\d+)/.exec(factory);
  if (literal) return Number(literal[1]);
  if (!factory.includes('IVF{centroids}')) return null;
  return cfg.centroids > 0 && !cfg.inferCentroids ? cfg.centroids : null;
}

/**
 * The search parameters of an index type, by name. `nlist` is the trained index's list
 * count (the server knows it); otherwise the cfg's, or the documented cap. `known` is false
 * for a factory string this table does not understand: names not listed are then left to
 * FAISS (which refuses unknown ones).
 */
export function searchParameterRules(cfg: IndexTypeCfg, opts: { nlist?: number } = {}): { rules: Map<string, SearchParamRule>; known: boolean } {
  const rules = new Map<string, SearchParamRule>();
  const factory = factoryOf(cfg);
  if (!factory) return { rules, known: false };
  const shape = shapeOf(factory);
  const add = (name: string, integer: boolean, min: number, max: number, about: string) => rules.set(name, { name, integer, min, max, about });
  if (shape.ivf) {
    const nlist = opts.nlist !== undefined && opts.nlist > 0 ? opts.nlist : configuredNlist(cfg);
    add('nprobe', true, 1, nlist ?? MAX_NPROBE_UNKNOWN_NLIST, nlist ? `IVF lists probed per query (the index has ${nlist})` : 'IVF lists probed per query (the list count is not known before training)');
    add('max_codes', true, 0, Number.MAX_SAFE_INTEGER, 'codes scanned per query at most (0 = no limit)');
    if (shape.hnswQuantizer) {
      add('efSearch', true, 1, MAX_EF, "search breadth of the HNSW coarse quantizer");
      add('quantizer_efSearch', true, 1, MAX_EF, 'search breadth of the HNSW coarse quantizer');
    }
  }
  if (shape.hnsw) {
    add('efSearch', true, 1, MAX_EF, 'HNSW search breadth (below k, fewer than k hits may come back)');
    add('efConstruction', true, 1, MAX_EF, 'HNSW construction breadth (for vectors added later)');
  }
  if (shape.pq) add('ht', true, 0, 65536, 'polysemous Hamming threshold (>= the code size in bits turns it off)');
  if (shape.pqr) add('k_factor', false, 1, MAX_K_FACTOR, 'candidates re-ranked per hit');
  if (shape.refine) add('k_factor_rf', true, 1, MAX_K_FACTOR, 'candidates refined per hit');
  // The original's hnswsq builder searches with efSearch = nprobe (see Shard.setParameter).
  if (cfg.indexBuilderType === 'hnswsq') rules.set('nprobe', { ...rules.get('efSearch')!, name: 'nprobe', about: "HNSW search breadth (efSearch: hnswsq maps nprobe to it, as the original)" });
  return { rules, known: shape.known };
}

/** A short name for the index type in messages. */
function typeName(cfg: IndexTypeCfg): string {
  return cfg.indexBuilderType ? `index_builder_type '${cfg.indexBuilderType}'` : `faiss_factory "${cfg.faissFactory ?? ''}"`;
}

/**
 * Throws ValidationError unless `name` is a search parameter of this index type and
 * `value` is in its range. For factory strings the table does not understand, an unlisted
 * name passes here (FAISS decides; the server turns its refusal into a ValidationError).
 */
export function checkSearchParameter(cfg: IndexTypeCfg, name: string, value: unknown, opts: { nlist?: number } = {}): void {
  const { rules, known } = searchParameterRules(cfg, opts);
  const rule = rules.get(name);
  if (!rule) {
    if (!known) return;
    const names = [...rules.keys()];
    throw new ValidationError(
      'name',
      names.length > 0
        ? `a search parameter of ${typeName(cfg)}: ${names.join(', ')}`
        : `no search parameter: ${typeName(cfg)} has none (an exact search)`,
      name,
    );
  }
  if (typeof value !== 'number' || !Number.isFinite(value) || (rule.integer && !Number.isInteger(value)) || value < rule.min || value > rule.max) {
    throw new ValidationError(name, `${rule.integer ? 'an integer' : 'a number'} from ${rule.min} to ${rule.max}: ${rule.about}`, value);
  }
}

/** Search parameters one call can set (FAISS SearchParameters), in the binding's names. */
export interface CallSearchParams {
  nprobe?: number;
  maxCodes?: number;
  efSearch?: number;
}

const PER_CALL = new Map<string, keyof CallSearchParams>([
  ['nprobe', 'nprobe'],
  ['max_codes', 'maxCodes'],
  ['efSearch', 'efSearch'],
  ['quantizer_efSearch', 'efSearch'],
]);

/**
 * Validates per-call search parameters (`search(id, q, k, { params })`) for this index type
 * and turns them into the binding's form. Per call: nprobe, max_codes, efSearch,
 * quantizer_efSearch; the others (ht, k_factor, ...) only as index defaults.
 */
export function checkCallSearchParams(cfg: IndexTypeCfg, params: unknown, opts: { nlist?: number } = {}): CallSearchParams {
  if (params === undefined || params === null) return {};
  if (typeof params !== 'object' || Array.isArray(params)) throw new ValidationError('params', 'an object of search parameters, e.g. { nprobe: 32 }', params);
  const out: CallSearchParams = {};
  for (const [name, value] of Object.entries(params)) {
    const target = PER_CALL.get(name);
    if (!target) {
      throw new ValidationError(`params.${name}`, `a search parameter one call can set (${[...PER_CALL.keys()].join(', ')}); set others as the index's default with setSearchParameter`, name);
    }
    checkSearchParameter(cfg, name, value, opts);
    // The original's hnswsq searches with efSearch = nprobe.
    out[cfg.indexBuilderType === 'hnswsq' && name === 'nprobe' ? 'efSearch' : target] = value as number;
  }
  return out;
}
