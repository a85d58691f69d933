/**
 * The index types whose training can be shared (issue 15, item 1), as the shared-training
 * test and the recall study (bench/study-shared-recall.ts) both build them:
 * [name, short name, cfg, search parameters].
 */
import type { IndexCfg } from '../../src/config/index.js';

export const SHARED_TRAINING_TYPES: Array<[string, string, Partial<IndexCfg>, Record<string, number>]> = [
  ['knnlm (IVF-PQ)', 'knnlm', { indexBuilderType: 'knnlm', centroids: 32, extra: { codeSize: 8, bitsPerVector: 6 } }, { nprobe: 8 }],
  ['IVF,PQ fast scan', 'fastscan', { faissFactory: 'IVF{centroids},PQ16x4fs', centroids: 32 }, { nprobe: 8 }],
  ['IVF,SQ8', 'sq8', { faissFactory: 'IVF{centroids},SQ8', centroids: 32 }, { nprobe: 8 }],
  ['hnswsq (HNSW+SQ8)', 'hnswsq', { indexBuilderType: 'hnswsq', extra: { storeN: 16, efConstruction: 40 } }, { efSearch: 64 }],
  ['OPQ + IVF-PQ', 'opq', { faissFactory: 'OPQ8,IVF{centroids},PQ8x6', centroids: 32 }, { nprobe: 8 }],
  ['PCA + IVF-Flat', 'pca', { faissFactory: 'PCA24,IVF{centroids},Flat', centroids: 32 }, { nprobe: 8 }],
];
