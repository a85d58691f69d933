/**
 * How the launchers start a `dfaiss server` process (issue 15, item 3: memory per process).
 * - Node flags (SERVER_NODE_ARGS): a 2 MiB semi-space (V8's default young generation grows to tens of MiB,
 *   which an idle server half fills with start-up garbage); an idle server measured 3.3 MiB
 *   less private memory with it (src/bench/server-memory.ts). DFAISS_SERVER_NODE_ARGS
 *   replaces them ('' for none).
 * - OPENBLAS_NUM_THREADS: OpenBLAS starts a pool of (cores - 1) threads when the addon loads,
 *   before any setOmpNumThreads; sized to the server's FAISS threads instead (unless set).
 */
export function serverNodeArgs(env: NodeJS.ProcessEnv = process.env): string[] {
  const v = env.DFAISS_SERVER_NODE_ARGS;
  return v === undefined ? [...SERVER_NODE_ARGS] : v.split(/\s+/).filter(Boolean);
}

/**
 * - `--max-semi-space-size=2`: see above.
 * - `--interrupt-budget=16896 --minimum-invocations-after-ic-update=50` (V8's defaults: 67584
 *   and 500): the request path tiers up to optimized code after fewer requests. With the
 *   defaults a fresh server kept V8's optimizing compiler busy for its first ~5,000 searches
 *   (89 % of its background-thread CPU during a search loop, perf), and on 2 cores shared
 *   by 4 servers that compiling was the batch-1 tail: over calls 600-1,600 of a new cluster
 *   the IVF p99 was 6.8-7.9 ms with the defaults and 4.4-4.7 ms with these (3 alternating
 *   runs each; after 15,000 calls both settle at ~1.5 ms).
 */
const SERVER_NODE_ARGS = ['--max-semi-space-size=2', '--interrupt-budget=16896', '--minimum-invocations-after-ic-update=50'];

export function serverEnv(threads: number, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return { OMP_WAIT_POLICY: env.OMP_WAIT_POLICY ?? 'PASSIVE', OPENBLAS_NUM_THREADS: env.OPENBLAS_NUM_THREADS ?? String(threads) };
}
