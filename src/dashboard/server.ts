/**
 * `dfaiss dashboard`: one web page over a live cluster. node:http serves the page (inline JS
 * and CSS: no CDN, it works offline), /api/state (the poller's latest view) and
 * /api/search (a search through a normal IndexClient). It reads the cluster's data: the
 * search shows stored metadata, so it binds loopback unless told otherwise.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ServerAddress } from '../discovery/discovery-file.js';
import type { IndexClientOptions } from '../client/api.js';
import { IndexClient } from '../client/index-client.js';
import { prng } from '../datasets/synthetic.js';
import { DfaissError } from '../errors.js';
import { listenError } from '../server/metrics-http.js';
import { DASHBOARD_HTML } from './page.js';
import { ClusterPoller } from './poller.js';

export interface DashboardOptions {
  discoveryConfig: string;
  /** @default 1000 */
  intervalMs?: number;
  /** Deadline per status call and per search. @default 3000 / 30 000 */
  statusTimeoutMs?: number;
  searchTimeoutMs?: number;
  client?: Pick<IndexClientOptions, 'secret' | 'tls'>;
}

export interface SearchRequest {
  index: string;
  k: number;
  /** A query vector (the index's dimension), or a seed for a random one in [0, 1). */
  query?: number[];
  seed?: number;
}

const MAX_BODY = 4 * 1024 * 1024;

export class Dashboard {
  readonly poller: ClusterPoller;
  private readonly http: Server;
  private searchClient: { key: string; client: Promise<IndexClient> } | null = null;
  private host = '127.0.0.1';

  constructor(private readonly opts: DashboardOptions) {
    this.poller = new ClusterPoller(opts.discoveryConfig, { intervalMs: opts.intervalMs ?? 1000, timeoutMs: opts.statusTimeoutMs ?? 3000, client: opts.client ?? {} });
    this.http = createServer((req, res) => {
      this.route(req, res).catch((err: Error) => sendJson(res, 500, { error: err.message }));
    });
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number; url: string }> {
    this.host = host;
    await this.poller.start();
    const addr = await new Promise<AddressInfo>((resolve, reject) => {
      this.http.once('error', (err: NodeJS.ErrnoException) => reject(listenError(err, host, port, '--port')));
      this.http.listen(port, host, () => resolve(this.http.address() as AddressInfo));
    });
    const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
    return { host: addr.address, port: addr.port, url: `http://${shown.includes(':') ? `[${shown}]` : shown}:${addr.port}/` };
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
    await this.poller.close();
    const c = this.searchClient;
    this.searchClient = null;
    await c?.client.then((cl) => cl.close(), () => {});
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // DNS rebinding: a page from elsewhere must not reach a loopback dashboard by a name of its own.
    if (!this.hostAllowed(req.headers.host)) {
      sendJson(res, 403, { error: `Host ${req.headers.host ?? '(none)'} is not this dashboard's address` });
      return;
    }
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method === 'GET' && path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'" }).end(DASHBOARD_HTML);
    } else if (req.method === 'GET' && path === '/api/state') {
      sendJson(res, 200, this.poller.view);
    } else if (req.method === 'POST' && path === '/api/search') {
      const body = await readBody(req);
      try {
        sendJson(res, 200, await this.search(parseSearch(body)));
      } catch (err) {
        sendJson(res, err instanceof DfaissError ? 400 : 500, { error: (err as Error).message });
      }
    } else {
      sendJson(res, 404, { error: 'not found' });
    }
  }

  private hostAllowed(header: string | undefined): boolean {
    if (this.host === '0.0.0.0' || this.host === '::') return true;
    if (!header) return false;
    const name = header.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    return name === 'localhost' || name === '127.0.0.1' || name === '::1' || name === this.host;
  }

  /** One search through an IndexClient to the servers that answered the last poll. */
  async search(r: SearchRequest): Promise<{ ms: number; servers: number; missing: Array<{ server: string; error: string }>; hits: Array<{ score: number; metadata: unknown; embedding: number[] }> }> {
    const view = this.poller.view;
    const index = view.indexes.find((i) => i.id === r.index);
    if (!index) throw new DfaissError(`unknown index '${r.index}': no server that is up has it`);
    let query: Float32Array;
    if (r.query) {
      if (r.query.length !== index.dim) throw new DfaissError(`the query has ${r.query.length} values, index '${r.index}' has dim ${index.dim}`);
      query = Float32Array.from(r.query);
    } else {
      const rand = prng(r.seed ?? 1);
      query = Float32Array.from({ length: index.dim }, () => rand());
    }
    const up = this.poller.upServers;
    if (up.length === 0) throw new DfaissError('no server is up');
    const client = await this.clientFor(up);
    const t0 = performance.now();
    const res = await client.search(r.index, query, r.k, { allowPartial: true, returnEmbeddings: true });
    const ms = performance.now() - t0;
    const down = view.servers.filter((s) => !s.up).map((s) => ({ server: s.address, error: s.error ?? 'down' }));
    return {
      ms,
      servers: up.length,
      missing: [...down, ...(res.missing ?? [])],
      hits: res.scores[0]!.map((score, i) => ({ score, metadata: res.metadata[0]![i], embedding: Array.from(res.embeddings?.[0]?.[i] ?? []) })),
    };
  }

  /** A client for exactly these servers; a new one when the set of live servers changed. */
  private async clientFor(up: ServerAddress[]): Promise<IndexClient> {
    const key = up.map((a) => `${a.host}:${a.port}`).sort().join(' ');
    if (this.searchClient?.key !== key) {
      const old = this.searchClient;
      const client = IndexClient.connectTo(up, { ...this.opts.client, callTimeoutMs: this.opts.searchTimeoutMs ?? 30_000, connectTimeoutMs: 5000, clientName: 'dfaiss-dashboard-search' });
      this.searchClient = { key, client };
      client.catch(() => {
        if (this.searchClient?.client === client) this.searchClient = null;
      });
      void old?.client.then((c) => c.close(), () => {});
    }
    return this.searchClient!.client;
  }
}

function parseSearch(body: string): SearchRequest {
  let j: unknown;
  try {
    j = JSON.parse(body);
  } catch {
    throw new DfaissError('the search request is not JSON');
  }
  const o = (j ?? {}) as Record<string, unknown>;
  if (typeof o.index !== 'string' || o.index === '') throw new DfaissError('index: expected an index id');
  const k = Number(o.k ?? 10);
  if (!Number.isSafeInteger(k) || k < 1 || k > 1000) throw new DfaissError(`k: expected an integer from 1 to 1000, got ${JSON.stringify(o.k)}`);
  const out: SearchRequest = { index: o.index, k };
  if (o.query !== undefined && o.query !== null) {
    if (!Array.isArray(o.query) || !o.query.every((v) => typeof v === 'number' && Number.isFinite(v))) throw new DfaissError('query: expected an array of numbers');
    out.query = o.query as number[];
  }
  if (o.seed !== undefined) {
    const seed = Number(o.seed);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new DfaissError('seed: expected a non-negative integer');
    out.seed = seed;
  }
  return out;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new DfaissError('request body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(
    JSON.stringify(body, (_k, v: unknown) => (typeof v === 'bigint' ? (Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()) : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)),
  );
}
