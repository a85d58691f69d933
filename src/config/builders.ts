/**
 * From an IndexCfg to what FAISS needs: an index_factory string, a metric and the
 * parameters to set through ParameterSpace after creation. Pure (no native code), so
 * configs can be checked on a client before any server sees them.
 */
import { GpuUnavailableError, ValidationError } from '../errors.js';
import type { Metric } from '../vectors.js';
import { cfgExtra, INDEX_BUILDER_TYPES, type IndexCfg } from './index-cfg.js';

export interface IndexSpec {
  /** FAISS index_factory description, e.g. "IVF1024,Flat". */
  factory: string;
  /** Metric to create the index with (hnswsq forces 'l2'). */
  metric: Metric;
  /** Set in order through FAISS's ParameterSpace once the index exists. */
  params: Array<[name: string, value: number]>;
  /** IVF list count used (given or inferred), or null when the index has no IVF layer we know of. */
  centroids: number | null;
}

export interface ResolveOptions {
  /**
   * Vectors the centroid count is inferred from. The original infers from every buffered
   * vector, not only the training subset. Defaults to numTrainVectors.
   */
  totalVectors?: number;
  /** Whether the linked FAISS has GPU support (the binding's `gpuAvailable`). @default false */
  gpuAvailable?: boolean;
}

/**
 * The original's centroid heuristic (Index.infer_n_centroids): int(2*sqrt(n)) below 1e6
 * vectors, 65536 below 1e7, 262144 below 1e8, else 1048576. Never less than 1.
 */
export function inferNumCentroids(n: number): number {
  if (n < 1e6) return Math.max(1, Math.floor(2 * Math.sqrt(Math.max(0, n))));
  if (n < 1e7) return 65536;
  if (n < 1e8) return 262144;
  return 1048576;
}

/** The centroid count an IVF index gets: inferred when centroids is 0 or inferCentroids is set. */
export function resolveCentroids(cfg: Pick<IndexCfg, 'centroids' | 'inferCentroids'>, totalVectors: number): number {
  return cfg.centroids === 0 || cfg.inferCentroids ? inferNumCentroids(totalVectors) : cfg.centroids;
}

function checkCount(field: string, n: unknown): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new ValidationError(field, 'an integer >= 0', n);
  return n;
}

/**
 * Translates the config into a FAISS factory string, metric and parameters.
 *
 * - flat: "Flat" with cfg.metric (the original always used inner product here).
 * - ivf_simple: "IVF{c},Flat"; knnlm: "IVF{c},PQ{codeSize}x{bitsPerVector}np";
 *   ivfsq: "IVF{c},SQfp16". IVF types get nprobe = cfg.nprobe.
 * - hnswsq: "HNSW{storeN},SQ8", always l2 (the original asserted l2; HNSW+SQ is built
 *   for L2 space), efSearch = cfg.nprobe, efConstruction from extra.
 * - ivf_gpu: GpuUnavailableError unless the FAISS build has GPUs; with GPUs, the
 *   faissFactory string (clustering on GPU is the binding's business).
 * - no builder type: faissFactory with "{centroids}" filled in; nprobe when it has an IVF layer.
 *
 * Unlike the original (which only inferred for faissFactory), builder types also infer
 * the centroid count when centroids is 0: the original would have crashed with 0 lists.
 * Throws ValidationError when an IVF layer has more lists than there are training
 * vectors: FAISS's k-means would fail with a far less helpful message.
 */
export function resolveIndexSpec(cfg: IndexCfg, numTrainVectors: number, options: ResolveOptions = {}): IndexSpec {
  const nTrain = checkCount('numTrainVectors', numTrainVectors);
  const nTotal = checkCount('totalVectors', options.totalVectors ?? nTrain);
  const centroids = (): number => resolveCentroids(cfg, nTotal);

  let spec: IndexSpec;
  switch (cfg.indexBuilderType) {
    case 'flat':
      spec = { factory: 'Flat', metric: cfg.metric, params: [], centroids: null };
      break;
    case 'ivf_simple': {
      const c = centroids();
      spec = { factory: `IVF${c},Flat`, metric: cfg.metric, params: [['nprobe', cfg.nprobe]], centroids: c };
      break;
    }
    case 'knnlm': {
      const c = centroids();
      const m = cfgExtra(cfg, 'codeSize');
      const nbits = cfgExtra(cfg, 'bitsPerVector');
      if (cfg.dim % m !== 0) {
        throw new ValidationError('code_size', `a divisor of dim (${cfg.dim}): PQ splits each vector into code_size sub-vectors`, m);
      }
      // Each PQ sub-quantizer runs k-means with 2^nbits centroids over the training set.
      if (nTrain < 2 ** nbits) {
        throw new ValidationError(
          'train_num',
          `at least ${2 ** nbits} training vectors for ${nbits}-bit PQ codes: raise train_num or lower bits_per_vector`,
          nTrain,
        );
      }
      // "np": no polysemous training, like the original's IndexIVFPQ constructor. The
      // factory's default polysemous step made training ~50x slower here (19 s vs 0.4 s
      // for 3000 vectors) and only helps Hamming-threshold search, which we never use.
      spec = { factory: `IVF${c},PQ${m}x${nbits}np`, metric: cfg.metric, params: [['nprobe', cfg.nprobe]], centroids: c };
      break;
    }
    case 'hnswsq':
      spec = {
        factory: `HNSW${cfgExtra(cfg, 'storeN')},SQ8`,
        metric: 'l2',
        params: [
          ['efSearch', cfg.nprobe],
          ['efConstruction', cfgExtra(cfg, 'efConstruction')],
        ],
        centroids: null,
      };
      break;
    case 'ivfsq': {
      const c = centroids();
      spec = { factory: `IVF${c},SQfp16`, metric: cfg.metric, params: [['nprobe', cfg.nprobe]], centroids: c };
      break;
    }
    case 'ivf_gpu':
      if (!options.gpuAvailable) {
        throw new GpuUnavailableError(
          "index_builder_type 'ivf_gpu' needs FAISS with GPU support, but the linked FAISS has none " +
            "(Debian's 1.7.3 and the 1.7.3 build setup makes are CPU-only): use 'ivf_simple' (or a CPU faiss_factory " +
            "such as \"IVF{centroids},Flat\") instead, or link a CUDA build of FAISS (DFAISS_FAISS_PREFIX, see the README)",
        );
      }
      if (cfg.faissFactory === null) {
        throw new ValidationError('faiss_factory', "an IVF factory string for index_builder_type 'ivf_gpu', e.g. \"IVF{centroids},Flat\"", null);
      }
      spec = fromFactory(cfg, cfg.faissFactory, centroids);
      break;
    case null:
      if (cfg.faissFactory === null) {
        throw new ValidationError(
          'index_builder_type',
          `one of ${INDEX_BUILDER_TYPES.join(', ')}, or a faiss_factory string: the config names no index type`,
          null,
        );
      }
      spec = fromFactory(cfg, cfg.faissFactory, centroids);
      break;
    default:
      throw new ValidationError('index_builder_type', `one of ${INDEX_BUILDER_TYPES.join(', ')}`, cfg.indexBuilderType);
  }

  if (spec.centroids !== null && spec.centroids > nTrain) {
    const inferred = cfg.centroids === 0 || cfg.inferCentroids;
    // Name the setting the count came from: `centroids` (builders, "{centroids}") or a
    // literal "IVF<n>" in faiss_factory.
    const fromCfg = cfg.indexBuilderType !== null || (cfg.faissFactory ?? '').includes('{centroids}');
    throw new ValidationError(
      fromCfg ? 'centroids' : 'faiss_factory',
      `at most as many IVF lists as training vectors (${nTrain}), since k-means needs a vector per centroid: ` +
        (fromCfg ? 'raise train_num or lower centroids' : 'raise train_num or use fewer lists in faiss_factory') +
        (fromCfg && inferred ? ` (${spec.centroids} was inferred from ${nTotal} vectors)` : ''),
      spec.centroids,
    );
  }
  return spec;
}

function fromFactory(cfg: IndexCfg, factory: string, centroids: () => number): IndexSpec {
  const hasPlaceholder = factory.includes('{centroids}');
  const description = hasPlaceholder ? factory.replaceAll('{centroids}', String(centroids())) : factory;
  // "IVF4096,..." (optionally behind a transform such as "PCA64,"): its list count can be
  // checked against the training set; other coarse quantizers (IMI) are left to FAISS.
  const ivf = /(?:^|,)\s*IVF(\d+)/.exec(description);
  const nlist = ivf ? Number(ivf[1]) : null;
  // HNSW factory strings keep FAISS's own efSearch: the original only mapped nprobe to
  // efSearch for its hnswsq builder.
  return { factory: description, metric: cfg.metric, params: ivf ? [['nprobe', cfg.nprobe]] : [], centroids: nlist };
}
