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
import type { ShardOperation } from '../shard-operation.js';

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
 * When quantizing once pays: the one rule. It saves S - 1 coarse searches of the batch
 * (in-process, 1 thread, 128-d IVF1024 nprobe 16: 0.65 ms per 100 queries, 6.5 us a query;
 * a 6,250-vector shard's batch-100 search took 1.71 ms, 0.39 ms given the lists) and costs
 * one more round trip before the fan-out: the quantize call's RPC work on the client and one
 * server (batch 1 at S = 1, client + server CPU without / with: 1.42 / 1.80 and 1.57 / 1.53 ms)
 * and its latency (batch-1 p50 1.0 ms without, mean 3.3-5.0 ms with), so batch 1 never pays.
 * `bench --scale`, 400k x 128 over S servers, server CPU per batch-100 call without / with,
 * runs at load 12-46 (bench/results/scale-quantize-run1.md, scale-quantize.md, -run3.md):
 * S = 1: 17.8 / 19.8, 20.5 / 23.3 ms; S = 4: 37.7 / 36.3, 36.0 / 37.5 (no gain visible);
 * S = 16: 77.5 / 70.0, 75.5 / 71.3, 73.5 / 64.2 (-6 to -13 %); S = 64: 170 / 185, 190 / 176,
 * 184 / 178 (within the noise at load 36-46, where 64 servers share 2 cores: batch-1 calls,
 * which save almost nothing, moved by up to 16 ms there). So: from 16 servers, and batches large
 * enough that the saved (S - 1) x n query quantizations outweigh the fixed cost of the call.
 */
export function quantizeOncePays(queries: number, servers: number): boolean {
  return servers >= 16 && queries >= 32;
}

export class SharedQuantizer {
  private next = 0;
  private readonly refusedUntil = new Map<string, number>();

  constructor(
    private readonly servers: readonly ShardOperation[],
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
