/**
 * How the launchers start a `dfaiss server` process (issue 15, item 3: memory per process).
 * - Node flags: a 2 MiB semi-space (V8's default young generation grows to tens of MiB,
 *   which an idle server half fills with start-up garbage); an idle server measured 3.3 MiB
 *   less private memory with it (src/bench/server-memory.ts). DFAISS_SERVER_NODE_ARGS
 *   replaces them ('' for none).
 * - OPENBLAS_NUM_THREADS: OpenBLAS starts a pool of (cores - 1) threads when the addon loads,
 *   before any setOmpNumThreads; sized to the server's FAISS threads instead (unless set).
 */
export function serverNodeArgs(env: NodeJS.ProcessEnv = process.env): string[] {
  const v = env.DFAISS_SERVER_NODE_ARGS;
  return v === undefined ? ['--max-semi-space-size=2'] : v.split(/\s+/).filter(Boolean);
}

export function serverEnv(threads: number, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return { OMP_WAIT_POLICY: env.OMP_WAIT_POLICY ?? 'PASSIVE', OPENBLAS_NUM_THREADS: env.OPENBLAS_NUM_THREADS ?? String(threads) };
}
