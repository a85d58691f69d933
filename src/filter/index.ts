/** The declarative metadata filter (issue 17): schema, evaluation, payload indexes, selection. */
export { checkFilter, filterSchema, parseFilter, FILTER_LIMITS, type Comparable, type Condition, type FieldOps, type Filter, type FilterNode, type LeafNode, type Scalar } from './schema.js';
export { compilePredicate, readsMetadata, valuesAt, type Predicate } from './evaluate.js';
export { Bits } from './bits.js';
export { PayloadIndex } from './payload-index.js';
export { SCAN_SLICE, selectRecords, yieldToLoop, type FilterSource, type Selection } from './select.js';
