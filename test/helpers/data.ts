/**
 * Deterministic synthetic vectors for tests. Points scatter around random cluster
 * centres, so IVF/PQ training sees real structure (uniform noise makes recall meaningless).
 */

import { gaussian, prng as mulberry32 } from '../../src/datasets/synthetic.js';

// The PRNGs live with the product's data generators (demo, benchmark); tests reuse them.
export { gaussian, mulberry32 };

export interface SyntheticOptions {
  /** Number of vectors. */
  n: number;
  dim: number;
  /** Number of cluster centres the points gather around. @default 16 */
  clusters?: number;
  /** PRNG seed. @default 1 */
  seed?: number;
  /** Standard deviation of the points around their centre (centres lie in [-1, 1]^dim). @default 0.1 */
  spread?: number;
  /** Scale every vector to unit length (so under 'dot' a vector is its own best match). @default false */
  normalize?: boolean;
}

export interface SyntheticClusters {
  /** n*dim row-major vectors. */
  data: Float32Array;
  /** Cluster index of each vector. */
  assignments: Uint32Array;
  /** clusters*dim row-major centres (before any normalization). */
  centres: Float32Array;
}

/** Points around `clusters` random centres, with the cluster of each point; same seed, same data. */
export function syntheticClusters(opts: SyntheticOptions): SyntheticClusters {
  const { n, dim, clusters = 16, seed = 1, spread = 0.1, normalize = false } = opts;
  const rng = mulberry32(seed);
  const normal = gaussian(rng);
  const centres = new Float32Array(clusters * dim);
  for (let i = 0; i < centres.length; i++) centres[i] = 2 * rng() - 1;
  const data = new Float32Array(n * dim);
  const assignments = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const c = Math.floor(rng() * clusters);
    assignments[i] = c;
    let norm = 0;
    for (let j = 0; j < dim; j++) {
      const v = centres[c * dim + j]! + spread * normal();
      data[i * dim + j] = v;
      norm += v * v;
    }
    if (normalize && norm > 0) {
      const inv = 1 / Math.sqrt(norm);
      for (let j = 0; j < dim; j++) data[i * dim + j]! *= inv;
    }
  }
  return { data, assignments, centres };
}

/** n*dim row-major Float32Array of points around `clusters` random centres; same seed, same data. */
export function syntheticDataset(opts: SyntheticOptions): Float32Array {
  return syntheticClusters(opts).data;
}
