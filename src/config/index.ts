/** Index configuration: IndexCfg parsing/serialization and the mapping to FAISS indexes. */
export {
  cfgExtra,
  defaultIndexCfg,
  DURABILITY_MODES,
  EXTRA_DEFAULTS,
  INDEX_BUILDER_TYPES,
  INDEX_METRICS,
  indexCfgToJSON,
  indexCfgToSnakeObject,
  loadIndexCfgFile,
  parseIndexCfg,
  TRAIN_MODES,
} from './index-cfg.js';
export type { Durability, IndexBuilderType, IndexCfg, KnownExtraKey, TrainMode } from './index-cfg.js';
export { inferNumCentroids, resolveCentroids, resolveIndexSpec } from './builders.js';
export type { IndexSpec, ResolveOptions } from './builders.js';
export { checkCallSearchParams, checkSearchParameter, configuredNlist, MAX_EF, MAX_K_FACTOR, MAX_NPROBE_UNKNOWN_NLIST, searchParameterRules } from './search-params.js';
export type { CallSearchParams, IndexTypeCfg, SearchParamRule } from './search-params.js';
export { checkIndexCfgBuildable, createFaissIndex, createStandInIndex } from './create-index.js';
