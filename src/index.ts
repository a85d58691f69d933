/**
 * dfaiss public API. Everything exported here is supported; modules not re-exported
 * here are internal and may change. The client half is 'dfaiss/client' (src/client.ts),
 * re-exported whole; this entry adds the server, the FAISS binding and the launchers.
 */
export * from './client.js';

export { FaissIndex, faissBuild, faissVersion, fp16ToFp32, fp16ToFp32Async, getOmpNumThreads, gpuAvailable, setOmpNumThreads } from './native/index.js';
export type { FaissBuildInfo, SearchResult, SearchWithVectorsResult, TrainedLayout, TrainedState } from './native/index.js';

export { resolveIndexSpec, createFaissIndex } from './config/index.js';
export type { IndexSpec } from './config/index.js';

export type { ServerSecurityOptions } from './server/security-options.js';
export type { TlsServerOptions } from './protocol/tls.js';
export { IndexServer } from './server/index-server.js';
export { LocalShard } from './server/local-shard.js';
export type { IndexServerOptions, IndexServerStartOptions } from './server/index-server.js';
export { LocalCluster } from './launch/local.js';
export type { LocalClusterOptions, LocalServerInfo, ServerExitEvent, ServerStatus } from './launch/local.js';
