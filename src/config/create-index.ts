/** Builds a real FAISS index from an IndexCfg through the native binding. */
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
  const index = native.FaissIndex.fromFactory(cfg.dim, spec.factory, spec.metric);
  for (const [name, value] of spec.params) await index.setParameter(name, value);
  return index;
}
