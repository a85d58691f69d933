/**
 * Quantize once for a fan-out search (issue 15): with shared training every shard has the
 * same coarse centroids, so instead of every shard repeating the coarse-quantizer search of
 * a batch (IVF: each query's nprobe nearest of nlist centroids), one server computes the
 * probe lists (quantize RPC) and every shard's search gets them as attachments. A shard
 * uses them only when its quantizer's fingerprint is the one they were computed with (a
 * shard that trained on its own quantizes itself), so results are those of the normal path.
 */
import { ValidationError } from '../errors.js';
import type { SharedQuantize } from './api.js';
import type { CallControl } from './call-control.js';
import type { ServerConn } from './server-conn.js';

/** Probe lists for one batch, as a search request carries them. */
export interface BatchProbes {
  fingerprint: string;
  nprobe: number;
  assign: BigInt64Array;
  coarse: Float32Array;
}

const MODES: readonly SharedQuantize[] = ['auto', 'always', 'never'];

/** After a server says an index cannot be quantized once (untrained, fast scan, ...), it is not asked again for this long. */
const REFUSED_MS = 5000;

/**
 * When quantizing once pays: the one rule. It saves (S - 1) coarse searches of the batch
 * (measured in-process, 1 thread, 128-d IVF1024 nprobe 16: 0.65 ms per batch of 100 queries,
 * 6.5 us a query) and costs one more round trip before the fan-out (quantize: ~0.2 ms of
 * client + server CPU and its latency) plus n x nprobe x 12 bytes to every shard.
 * TODO(measure): thresholds from `bench --scale`.
 */
export function quantizeOncePays(queries: number, servers: number): boolean {
  return servers >= 4 && queries >= 32;
}

export class SharedQuantizer {
  private next = 0;
  private readonly refusedUntil = new Map<string, number>();

  constructor(
    private readonly servers: readonly ServerConn[],
    private readonly mode: SharedQuantize,
  ) {
    if (!MODES.includes(mode)) throw new ValidationError('sharedQuantize', "'auto', 'always' or 'never'", mode);
  }

  /**
   * The batch's probe lists from one server (taking turns), or null: it does not pay, the
   * index cannot (the server said why, remembered for REFUSED_MS), or the server failed
   * (every shard then quantizes itself: failover and allowPartial work as without).
   */
  async probes(indexId: string, queries: Float32Array, dim: number, params: Record<string, number> | undefined, control: CallControl): Promise<BatchProbes | null> {
    if (this.mode === 'never' || (this.mode === 'auto' && !quantizeOncePays(queries.length / dim, this.servers.length))) return null;
    if ((this.refusedUntil.get(indexId) ?? 0) > Date.now()) return null;
    const server = this.servers[this.next++ % this.servers.length]!;
    let reply;
    try {
      reply = await server.call('query', 'quantize', { indexId, ...(params ? { params } : {}) }, [queries], control);
    } catch {
      return null; // the search itself reports what is wrong (bad params, no such index, server down)
    }
    const { fingerprint, nprobe } = reply.result;
    const [assign, coarse] = reply.attachments;
    if (fingerprint === null || !(assign instanceof BigInt64Array) || !(coarse instanceof Float32Array)) {
      this.refusedUntil.set(indexId, Date.now() + REFUSED_MS);
      return null;
    }
    this.refusedUntil.delete(indexId);
    return { fingerprint, nprobe, assign, coarse };
  }
}
