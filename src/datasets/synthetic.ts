/**
 * Reproducible vectors with real structure, for recall tests, the demo and the benchmark.
 * Like FAISS's contrib SyntheticDataset: points live near a low-dimensional manifold
 * (a random non-linear map of a few latent dimensions) and around cluster centres, so
 * nearest neighbours mean something and IVF recall is meaningful (on uniform random
 * data every point is roughly equidistant and IVF recall says nothing).
 */

import { gaussian, prng } from '../util/random.js';

// The PRNGs live in util/ (the shard samples with them too); re-exported for the data tools.
export { gaussian, prng };

export interface SyntheticOptions {
  /** Vector dimension. */
  dim: number;
  /** Latent (intrinsic) dimension. @default 10 */
  intrinsicDim?: number;
  /** Number of clusters in latent space. @default 64 */
  clusters?: number;
  /** Spread of points around their cluster centre, relative to centre spread. @default 0.3 */
  spread?: number;
  /** @default 1234 */
  seed?: number;
}

/**
 * A generator of structured vectors. `base(n)`, `queries(n)` and `train(n)` draw from
 * the same distribution with independent streams, so queries are not copies of base points.
 */
export class SyntheticDataset {
  readonly dim: number;
  private readonly latent: number;
  private readonly centres: Float64Array;
  private readonly clusters: number;
  private readonly spread: number;
  private readonly proj: Float64Array;
  private readonly seed: number;

  constructor(opts: SyntheticOptions) {
    this.dim = opts.dim;
    this.latent = opts.intrinsicDim ?? 10;
    this.clusters = opts.clusters ?? 64;
    this.spread = opts.spread ?? 0.3;
    this.seed = opts.seed ?? 1234;
    const g = gaussian(prng(this.seed));
    this.centres = Float64Array.from({ length: this.clusters * this.latent }, g);
    this.proj = Float64Array.from({ length: this.latent * this.dim }, () => g() / Math.sqrt(this.latent));
  }

  /** n base vectors (stream 1). */
  base(n: number, offset = 0): Float32Array {
    return this.generate(n, 1, offset);
  }

  /** n query vectors (stream 2). */
  queries(n: number): Float32Array {
    return this.generate(n, 2, 0);
  }

  /** n training vectors (stream 3). */
  train(n: number): Float32Array {
    return this.generate(n, 3, 0);
  }

  /**
   * Vectors [offset, offset+n) of a stream. Each block of 1024 rows has its own seed, so any
   * slice can be generated independently (a loader can produce batch i without batch 0..i-1).
   */
  private generate(n: number, stream: number, offset: number): Float32Array {
    const { dim, latent } = this;
    const out = new Float32Array(n * dim);
    const z = new Float64Array(latent);
    const BLOCK = 1024;
    let row = 0;
    while (row < n) {
      const global = offset + row;
      const block = Math.floor(global / BLOCK);
      const rand = prng((this.seed * 7919 + stream * 104729 + block * 2654435761) >>> 0);
      const g = gaussian(rand);
      // skip to the row within the block so slices line up with full generations
      for (let skip = global - block * BLOCK; skip > 0; skip--) this.row(rand, g, z, null);
      const end = Math.min(n, (block + 1) * BLOCK - offset);
      for (; row < end; row++) this.row(rand, g, z, out.subarray(row * dim, (row + 1) * dim));
    }
    return out;
  }

  private row(rand: () => number, g: () => number, z: Float64Array, out: Float32Array | null): void {
    const { latent, dim } = this;
    const c = Math.min(this.clusters - 1, Math.floor(rand() * this.clusters));
    for (let j = 0; j < latent; j++) z[j] = this.centres[c * latent + j]! + this.spread * g();
    if (!out) return;
    for (let i = 0; i < dim; i++) {
      let s = 0;
      for (let j = 0; j < latent; j++) s += z[j]! * this.proj[j * dim + i]!;
      // mild non-linearity: the manifold is curved, not a linear subspace
      out[i] = Math.tanh(s) + 0.1 * s;
    }
  }
}
