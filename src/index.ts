/**
 * dfaiss public API. Everything exported here is supported; modules not re-exported
 * here are internal and may change.
 */
export { FaissIndex, MAX_K, faissVersion, fp16ToFp32, fp16ToFp32Async, getNumThreads, gpuAvailable, setNumThreads } from './native/index.js';
export type { IdsInput, Metric, SearchResult, SearchWithVectorsResult, VectorsInput } from './native/index.js';

export {
  DURABILITY_MODES,
  INDEX_BUILDER_TYPES,
  INDEX_METRICS,
  TRAIN_MODES,
  defaultIndexCfg,
  indexCfgToJSON,
  loadIndexCfgFile,
  parseIndexCfg,
  resolveIndexSpec,
  createFaissIndex,
} from './config/index.js';
export type { Durability, IndexBuilderType, IndexCfg, IndexMetric, IndexSpec, TrainMode } from './config/index.js';

export { IndexClient } from './client/index-client.js';
export type { AddOptions, DeleteSelector, GetOptions, IndexClientOptions, IterateOptions, SearchFilter, SearchOptions, SearchResults } from './client/index-client.js';
export type { DeleteResult, GetResult, IterateCursor, IteratePage, RangeSearchResults, RecordId, StoredRecord } from './client/records.js';
export type { PendingRevocation } from './client/revocations.js';
export type { ClientSecurityOptions } from './client/security-options.js';
export type { ServerSecurityOptions } from './server/security-options.js';
export { readSecretFile } from './protocol/auth.js';
export type { Secret } from './protocol/auth.js';
export type { PemSource, TlsClientOptions, TlsServerOptions } from './protocol/tls.js';
export { parseDiscovery, readDiscovery } from './client/discovery.js';
export type { DiscoveryOptions, ServerAddress } from './client/discovery.js';
export { IndexServer } from './server/index-server.js';
export type { IndexServerOptions, IndexServerStartOptions } from './server/index-server.js';
export { LocalCluster } from './launch/local.js';
export type { LocalClusterOptions, LocalServerInfo, ServerExitEvent, ServerStatus } from './launch/local.js';
export { IndexState, aggregateStates } from './shard/state.js';

export {
  AuthError,
  ConnectionError,
  DfaissError,
  FaissError,
  GpuUnavailableError,
  IndexStateError,
  NativeLoadError,
  ProtocolError,
  RemoteError,
  ServerUnavailableError,
  StorageError,
  TimeoutError,
  UnknownIndexError,
  ValidationError,
} from './errors.js';
