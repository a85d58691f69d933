/** Builds a real FAISS index from an IndexCfg through the native binding. */
import { FaissError, ValidationError } from '../errors.js';
import type { FaissIndex } from '../native/index.js';
import { resolveIndexSpec, type ResolveOptions } from './builders.js';
import type { IndexCfg } from './index-cfg.js';

/**
 * Creates the (untrained) FAISS index the config describes and sets its parameters
 * (nprobe, efSearch, efConstruction) through ParameterSpace. `numTrainVectors` is the
 * training set size (centroid inference and checks; see resolveIndexSpec).
 * Throws ValidationError / GpuUnavailableError before touching FAISS, FaissError from FAISS.
 */
export async function createFaissIndex(
  cfg: IndexCfg,
  numTrainVectors: number,
  options: Pick<ResolveOptions, 'totalVectors'> = {},
): Promise<FaissIndex> {
  // Loaded on first use so that importing the config module never needs the native addon
  // (clients and config tooling run without it).
  const native = await import('../native/index.js');
  const spec = resolveIndexSpec(cfg, numTrainVectors, { ...options, gpuAvailable: native.gpuAvailable });
  const index = native.FaissIndex.fromFactory(cfg.dim, spec.factory, faissMetric(spec.metric));
  for (const [name, value] of spec.params) await index.setParameter(name, value);
  return index;
}

/**
 * Checks, when an index is created, what would otherwise only fail at training time (a
 * server-side check: it needs the native addon):
 * - the FAISS index_factory string must build (with a stand-in centroid count), so a
 *   malformed faissFactory is refused with a ValidationError naming it, not later as a
 *   background training error;
 * - with trainNum > 0 training always runs on trainNum vectors, so an IVF layer with more
 *   lists than that (or PQ codes needing more vectors) can never train: refused now.
 * GPU requests without GPU support throw GpuUnavailableError.
 */
export async function checkIndexCfgBuildable(cfg: IndexCfg): Promise<void> {
  const native = await import('../native/index.js');
  const gpuAvailable = native.gpuAvailable;
  if (cfg.trainNum > 0) resolveIndexSpec(cfg, cfg.trainNum, { totalVectors: cfg.trainNum, gpuAvailable });
  try {
    await createStandInIndex(cfg);
  } catch (err) {
    if (!(err instanceof FaissError)) throw err;
    throw new ValidationError(
      cfg.indexBuilderType === null ? 'faissFactory' : 'indexBuilderType',
      `a configuration FAISS can build for dim=${cfg.dim} (${err.message})`,
      cfg.indexBuilderType ?? cfg.faissFactory,
    );
  }
}

/**
 * An untrained index of the type `cfg` describes, with one IVF list (cheap to build): for
 * checking factory strings and search parameters before the real index exists.
 */
export async function createStandInIndex(cfg: IndexCfg): Promise<FaissIndex> {
  const native = await import('../native/index.js');
  // Any training set size is possible here: only the index type matters.
  const spec = resolveIndexSpec({ ...cfg, centroids: 1, inferCentroids: false }, Number.MAX_SAFE_INTEGER, { gpuAvailable: native.gpuAvailable });
  return native.FaissIndex.fromFactory(cfg.dim, spec.factory, faissMetric(spec.metric));
}

/** 'cosine' is inner product over L2-normalised vectors (the shard normalises them): FAISS sees 'dot'. */
function faissMetric(metric: IndexCfg['metric']): 'dot' | 'l2' {
  return metric === 'cosine' ? 'dot' : metric;
}
