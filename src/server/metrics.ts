/**
 * Prometheus metrics of one index server (prom-client, on a Registry of its own so several
 * servers in one process never mix). A request costs two number increments and one
 * histogram observe on a pre-made child (no label lookup). Per-index figures (ntotal,
 * buffered, state, tombstones) are read from the shards when Prometheus scrapes, so they
 * cost nothing in between.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { INDEX_STATES } from '../shard/state.js';
import type { ShardInfo } from '../shard/shard.js';

/** What the metrics read from their server at scrape time. */
export interface MetricsSource {
  rank: number;
  connectionCount(): number;
  indexes(): Iterable<[string, ShardInfo]>;
}

/** Latency buckets in seconds: 50 µs (an inline search) to 2 min (a call deadline). */
const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];
const SLOW_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
const FSYNC_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];

/** Plain numbers on the hot path; the counters read them at scrape time. */
interface MethodInstruments {
  requests: number;
  errors: number;
  latency: Histogram.Internal<'method'>;
}

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly perMethod = new Map<string, MethodInstruments>();
  private readonly latency: Histogram<'method'>;
  private readonly training: Histogram<'index' | 'kind'>;
  private readonly snapshots: Histogram<'index'>;
  private readonly walBytes: Counter<'index'>;
  private readonly fsync: Histogram<never>;

  constructor(source: MetricsSource, methodNames: readonly string[]) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ rank: String(source.rank) });
    // process_resident_memory_bytes, nodejs_eventloop_lag_seconds, heap, GC, handles...
    collectDefaultMetrics({ register: this.registry });
    const perMethod = this.perMethod;
    const methodCounter = (name: string, help: string, pick: (m: MethodInstruments) => number): void => {
      new Counter({
        name, help, labelNames: ['method'], registers,
        collect() {
          this.reset();
          for (const [method, m] of perMethod) this.inc({ method }, pick(m));
        },
      });
    };
    methodCounter('dfaiss_requests_total', 'RPC requests answered, per method', (m) => m.requests);
    methodCounter('dfaiss_request_errors_total', 'RPC requests answered with an error, per method', (m) => m.errors);
    this.latency = new Histogram({ name: 'dfaiss_request_duration_seconds', help: 'RPC time from request parsed to reply written, per method', labelNames: ['method'], buckets: LATENCY_BUCKETS, registers });
    for (const m of methodNames) this.instrumentsOf(m);
    new Gauge({ name: 'dfaiss_connections', help: 'client connections open now', registers, collect() { this.set(source.connectionCount()); } });
    const perIndex = (name: string, help: string, pick: (i: ShardInfo) => number): void => {
      new Gauge({
        name, help, labelNames: ['index'], registers,
        collect() {
          this.reset(); // a dropped index disappears instead of keeping its last value
          for (const [id, info] of source.indexes()) this.set({ index: id }, pick(info));
        },
      });
    };
    perIndex('dfaiss_index_ntotal', 'vectors searchable in FAISS, per index', (i) => i.ntotal);
    perIndex('dfaiss_index_buffered', 'vectors received but not yet in FAISS, per index', (i) => i.buffered);
    perIndex('dfaiss_index_buffered_bytes', 'bytes held outside FAISS per index: buffered vectors (float16 as float16) plus a training sample held here, what --max-buffered-mb bounds', (i) => i.bufferedBytes + i.sampleBytes);
    perIndex('dfaiss_index_tombstoned', 'vectors of revoked batches (stored, never returned), per index', (i) => i.tombstoned);
    new Gauge({
      name: 'dfaiss_index_state', help: '1 for the state each index is in (NOT_TRAINED, TRAINING, TRAINED, ADD), else 0', labelNames: ['index', 'state'], registers,
      collect() {
        this.reset();
        for (const [id, info] of source.indexes()) for (const s of INDEX_STATES) this.set({ index: id, state: s }, info.state === s ? 1 : 0);
      },
    });
    this.training = new Histogram({ name: 'dfaiss_training_duration_seconds', help: "trainings' duration: kind 'shard' (this shard trained itself) or 'shared' (this server trained for the cluster)", labelNames: ['index', 'kind'], buckets: SLOW_BUCKETS, registers });
    this.snapshots = new Histogram({ name: 'dfaiss_snapshot_duration_seconds', help: 'snapshot writes, per index', labelNames: ['index'], buckets: SLOW_BUCKETS, registers });
    this.walBytes = new Counter({ name: 'dfaiss_wal_bytes_total', help: 'bytes written to write-ahead logs, per index', labelNames: ['index'], registers });
    this.fsync = new Histogram({ name: 'dfaiss_wal_fsync_duration_seconds', help: 'write-ahead log fdatasync latency (one per group commit)', buckets: FSYNC_BUCKETS, registers });
  }

  /** One answered request (called by the RPC layer). */
  onCall(method: string, seconds: number, ok: boolean): void {
    const m = this.perMethod.get(method) ?? this.instrumentsOf(method);
    m.requests++;
    if (!ok) m.errors++;
    m.latency.observe(seconds);
  }

  onTrained(indexId: string, seconds: number, kind: 'shard' | 'shared'): void {
    this.training.observe({ index: indexId, kind }, seconds);
  }

  onSnapshot(indexId: string, seconds: number): void {
    this.snapshots.observe({ index: indexId }, seconds);
  }

  onWalWrite(indexId: string, bytes: number, fsyncSeconds: number | null): void {
    this.walBytes.inc({ index: indexId }, bytes);
    if (fsyncSeconds !== null) this.fsync.observe(fsyncSeconds);
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private instrumentsOf(method: string): MethodInstruments {
    // Every method is listed (at 0) from the start: rate() needs a first sample.
    const m = { requests: 0, errors: 0, latency: this.latency.labels(method) };
    this.perMethod.set(method, m);
    return m;
  }
}
