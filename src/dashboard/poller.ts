/**
 * The dashboard's view of a cluster: every `intervalMs` it re-reads the discovery file and
 * asks each listed server for its status over a connection of its own (kept open between
 * polls, so a poll costs one small RPC per server; a server that is down is shown down and
 * reconnected on a later poll). QPS and mean search latency are rates of the servers'
 * request counters between two polls.
 *
 * The status calls go through an RpcClient, not a one-server IndexClient: IndexClient's
 * status() also finishes shared trainings it finds due, and a client that sees one server
 * only would train that shard on its own sample (other shards, seen alone, would get
 * different centroids). Watching must not change the cluster; searches (server.ts) use a
 * normal IndexClient over every live server.
 */
import { readFile } from 'node:fs/promises';
import { parseDiscovery, type ServerAddress } from '../discovery/discovery-file.js';
import type { IndexClientOptions } from '../client/api.js';
import { rpcClientSecurityOptions } from '../client/security-options.js';
import { RpcClient } from '../protocol/rpc-client.js';
import { aggregateStates, type IndexState } from '../shard/state.js';

export interface ShardView {
  rank: number | null;
  server: string;
  state: IndexState;
  ntotal: number;
  buffered: number;
  tombstoned: number;
}

export interface IndexView {
  id: string;
  dim: number;
  metric: string;
  /** The cluster's state, aggregated as IndexClient.getState does. */
  state: IndexState;
  ntotal: number;
  buffered: number;
  trainNum: number;
  sharedTraining: boolean;
  /** 0..1: share of trainNum buffered before training, of received vectors indexed after it; null when unknown. */
  progress: number | null;
  progressLabel: string;
  shards: ShardView[];
}

export interface ServerView {
  rank: number | null;
  address: string;
  up: boolean;
  error?: string;
  rssBytes?: number;
  heapBytes?: number;
  connections?: number;
  /** Requests per second since the previous poll. */
  qps?: number;
  /** Mean search latency on the server since the previous poll (ms), when it served searches. */
  searchMs?: number;
  requests?: number;
  uptimeSec?: number;
  metricsPort?: number;
}

export interface ClusterView {
  discovery: string;
  /** Servers the discovery file says the cluster has (-1 while it has no count line). */
  expected: number;
  /** Why the discovery file could not be read, if so. */
  discoveryError?: string;
  time: string;
  servers: ServerView[];
  indexes: IndexView[];
}

interface StatusReply {
  rank?: number;
  rssBytes?: number;
  heapBytes?: number;
  connections?: number;
  uptimeSec?: number;
  metricsPort?: number;
  requests?: { requests: number; errors: number; searches: number; searchSeconds: number };
  indexes?: Record<string, { state: IndexState; ntotal: number; buffered: number; tombstoned?: number; dim: number; metric: string; trainNum?: number; sharedTraining?: boolean }>;
}

interface Tracked {
  client: RpcClient | null;
  connecting: Promise<RpcClient> | null;
  /** Rank from the last answer: a server that is down keeps showing it. */
  rank?: number;
  last?: { at: number; requests: number; searches: number; searchSeconds: number };
}

const key = (a: ServerAddress): string => `${a.host}:${a.port}`;

export class ClusterPoller {
  private readonly tracked = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | null = null;
  private latest: ClusterView;
  private polling: Promise<void> | null = null;
  private closed = false;

  constructor(
    readonly discoveryConfig: string,
    private readonly opts: { intervalMs: number; timeoutMs: number; client: Pick<IndexClientOptions, 'secret' | 'tls'> },
  ) {
    this.latest = { discovery: discoveryConfig, expected: -1, time: new Date().toISOString(), servers: [], indexes: [] };
  }

  get view(): ClusterView {
    return this.latest;
  }

  /** The servers that answered the last poll (for searches). */
  get upServers(): ServerAddress[] {
    return this.latest.servers.filter((s) => s.up).map((s) => {
      const i = s.address.lastIndexOf(':');
      return { host: s.address.slice(0, i), port: Number(s.address.slice(i + 1)) };
    });
  }

  start(): Promise<void> {
    const first = this.pollOnce();
    const tick = (): void => {
      if (this.closed) return;
      this.polling ??= this.pollOnce().finally(() => (this.polling = null));
      this.timer = setTimeout(tick, this.opts.intervalMs);
    };
    this.timer = setTimeout(tick, this.opts.intervalMs);
    return first;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.polling?.catch(() => {});
    await Promise.allSettled([...this.tracked.values()].map((t) => t.client?.close()));
    this.tracked.clear();
  }

  private async pollOnce(): Promise<void> {
    let expected = -1;
    let addresses: ServerAddress[] = [];
    let discoveryError: string | undefined;
    try {
      ({ expected, servers: addresses } = parseDiscovery(await readFile(this.discoveryConfig, 'utf8'), this.discoveryConfig));
    } catch (err) {
      discoveryError = (err as NodeJS.ErrnoException).code === 'ENOENT' ? `${this.discoveryConfig} does not exist (yet)` : (err as Error).message;
    }
    // Servers no longer listed (moved to another port) are forgotten.
    const listed = new Set(addresses.map(key));
    for (const [k, t] of this.tracked) {
      if (!listed.has(k)) {
        void t.client?.close();
        this.tracked.delete(k);
      }
    }
    const now = performance.now();
    const servers = await Promise.all(addresses.map((a) => this.pollServer(a, now)));
    this.latest = {
      discovery: this.discoveryConfig,
      expected,
      ...(discoveryError ? { discoveryError } : {}),
      time: new Date().toISOString(),
      servers: servers.map((s) => s.view),
      indexes: indexViews(servers),
    };
  }

  private async pollServer(address: ServerAddress, now: number): Promise<{ view: ServerView; status: StatusReply | null }> {
    const k = key(address);
    let t = this.tracked.get(k);
    if (!t) {
      t = { client: null, connecting: null };
      this.tracked.set(k, t);
    }
    try {
      const client = await this.clientFor(t, address);
      const s = (await client.call<StatusReply>('status', {}, [], { timeoutMs: this.opts.timeoutMs })).result;
      if (s.rank !== undefined) t.rank = s.rank;
      const view: ServerView = { rank: s.rank ?? null, address: k, up: true, rssBytes: s.rssBytes, heapBytes: s.heapBytes, connections: s.connections, uptimeSec: s.uptimeSec, metricsPort: s.metricsPort };
      const r = s.requests;
      if (r) {
        view.requests = r.requests;
        const prev = t.last;
        if (prev && now > prev.at && r.requests >= prev.requests) {
          // Minus our own status call: the dashboard should not show itself as load.
          view.qps = Math.max(0, r.requests - prev.requests - 1) / ((now - prev.at) / 1000);
          const searches = r.searches - prev.searches;
          if (searches > 0) view.searchMs = ((r.searchSeconds - prev.searchSeconds) / searches) * 1000;
        }
        t.last = { at: now, requests: r.requests, searches: r.searches, searchSeconds: r.searchSeconds };
      }
      return { view, status: s };
    } catch (err) {
      t.last = undefined;
      // Connect again on the next poll (a restarted server is a new process).
      const dead = t.client;
      t.client = null;
      void dead?.close().catch(() => {});
      return { view: { rank: t.rank ?? null, address: k, up: false, error: (err as Error).message }, status: null };
    }
  }

  private async clientFor(t: Tracked, address: ServerAddress): Promise<RpcClient> {
    if (t.client && !t.client.closed) return t.client;
    t.connecting ??= RpcClient.connect(address.host, address.port, {
      ...rpcClientSecurityOptions(this.opts.client),
      connectTimeoutMs: this.opts.timeoutMs,
      callTimeoutMs: this.opts.timeoutMs,
      clientName: 'dfaiss-dashboard',
    }).finally(() => (t.connecting = null));
    t.client = await t.connecting;
    if (this.closed) await t.client.close();
    return t.client;
  }
}

function indexViews(servers: Array<{ view: ServerView; status: StatusReply | null }>): IndexView[] {
  const byId = new Map<string, ShardView[]>();
  const first = new Map<string, NonNullable<StatusReply['indexes']>[string]>();
  for (const { view, status } of servers) {
    for (const [id, info] of Object.entries(status?.indexes ?? {})) {
      if (!byId.has(id)) byId.set(id, []);
      if (!first.has(id)) first.set(id, info);
      byId.get(id)!.push({ rank: view.rank, server: view.address, state: info.state, ntotal: info.ntotal, buffered: info.buffered, tombstoned: info.tombstoned ?? 0 });
    }
  }
  return [...byId.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([id, shards]) => {
      const info = first.get(id)!;
      const ntotal = shards.reduce((n, s) => n + s.ntotal, 0);
      const buffered = shards.reduce((n, s) => n + s.buffered, 0);
      const state = aggregateStates(shards.map((s) => s.state));
      const trainNum = info.trainNum ?? 0;
      let progress: number | null = null;
      let progressLabel = '';
      if (state === 'NOT_TRAINED') {
        // Shared training starts when the cluster buffers trainNum; per-shard when each shard does.
        const need = info.sharedTraining ? trainNum : trainNum * shards.length;
        if (need > 0) {
          progress = Math.min(1, buffered / need);
          progressLabel = `buffering for training: ${buffered} of ${need}`;
        } else progressLabel = 'waiting for a training request (train_num 0)';
      } else if (state === 'TRAINING') {
        progressLabel = `training (${shards.filter((s) => s.state === 'TRAINING').length} of ${shards.length} shards)`;
      } else if (ntotal + buffered > 0) {
        progress = ntotal / (ntotal + buffered);
        progressLabel = buffered > 0 ? `adding the buffer to FAISS: ${ntotal} of ${ntotal + buffered}` : 'everything searchable';
      }
      return { id, dim: info.dim, metric: info.metric, state, ntotal, buffered, trainNum, sharedTraining: info.sharedTraining ?? false, progress, progressLabel, shards };
    });
}
