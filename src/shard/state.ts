/** Life cycle of one shard, and the cluster-wide aggregation of shard states. */

export const IndexState = {
  /** Vectors are buffered; training has not started. */
  NOT_TRAINED: 'NOT_TRAINED',
  /** Training runs in the background; new vectors keep buffering. */
  TRAINING: 'TRAINING',
  /** Everything received is searchable. */
  TRAINED: 'TRAINED',
  /** Trained, and buffered vectors are being added in the background (searches keep working). */
  ADD: 'ADD',
} as const;
export type IndexState = (typeof IndexState)[keyof typeof IndexState];

/** Every state, in life-cycle order (the metrics export one gauge per state). */
export const INDEX_STATES: readonly IndexState[] = Object.values(IndexState);

/**
 * The original's rule: all equal -> that state; else any TRAINING -> TRAINING; else any
 * NOT_TRAINED -> NOT_TRAINED; else any ADD -> ADD; else TRAINED.
 */
export function aggregateStates(states: readonly IndexState[]): IndexState {
  if (states.length === 0) return IndexState.NOT_TRAINED;
  if (states.every((s) => s === states[0])) return states[0]!;
  for (const s of [IndexState.TRAINING, IndexState.NOT_TRAINED, IndexState.ADD]) {
    if (states.includes(s)) return s;
  }
  return IndexState.TRAINED;
}
