/**
 * dfaiss's client entry (`import { IndexClient } from 'dfaiss/client'`): everything a service
 * needs to query and load a cluster, and nothing that loads the FAISS addon, so it runs
 * where no FAISS or C++ toolchain exists. `dfaiss` (the main entry) re-exports all of it.
 */
export { MAX_K } from './vectors.js';
export type { FaissMetric, IdsInput, Metric, VectorsInput } from './vectors.js';
export {
  DURABILITY_MODES,
  INDEX_BUILDER_TYPES,
  INDEX_METRICS,
  TRAIN_MODES,
  defaultIndexCfg,
  indexCfgToJSON,
  loadIndexCfgFile,
  parseIndexCfg,
} from './config/index-cfg.js';
export type { Durability, IndexBuilderType, IndexCfg, TrainMode } from './config/index-cfg.js';
export { IndexClient } from './client/index-client.js';
export { IndexHandle } from './client/index-handle.js';
export { RemoteShard } from './client/server-conn.js';
export type { ShardOperation, ConnKind, Reply } from './shard-operation.js';
export type {
  AddOptions,
  DeleteSelector,
  GetOptions,
  IndexClientEvents,
  IndexClientOptions,
  IterateOptions,
  SearchFilter,
  SearchOptions,
  SearchResults,
} from './client/api.js';
export type { CallControl } from './client/call-control.js';
export type { DeleteResult, GetResult, IterateCursor, IteratePage, RangeSearchResults, RecordId, StoredRecord } from './client/records.js';
export type { PendingRevocation } from './client/revocations.js';
export { checkFilter, FILTER_LIMITS } from './filter/schema.js';
export type { Comparable, Condition, FieldOps, Filter, Scalar } from './filter/schema.js';
export type { ClientSecurityOptions } from './client/security-options.js';
export { readSecretFile } from './protocol/auth.js';
export type { Secret } from './protocol/auth.js';
export type { PemSource, TlsClientOptions } from './protocol/tls.js';
export { parseDiscovery, readDiscovery } from './discovery/discovery-file.js';
export type { DiscoveryOptions, ServerAddress } from './discovery/discovery-file.js';
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
  ServerBusyError,
  ServerUnavailableError,
  StorageError,
  TimeoutError,
  UnknownIndexError,
  ValidationError,
} from './errors.js';
