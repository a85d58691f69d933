/**
 * The metrics port of one index server: plain HTTP (node:http), separate from the RPC port
 * so Prometheus and orchestrator probes never speak the binary protocol.
 *   GET /metrics  Prometheus text format
 *   GET /healthz  200 while the process runs its event loop (liveness)
 *   GET /readyz   200 once the indexes are loaded and the RPC port serves, 503 before and while stopping
 * No authentication: it exposes counts and durations only, never vectors, metadata or index
 * ids beyond their names (docs/security.md). It binds loopback unless told otherwise.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DfaissError } from '../errors.js';
import type { ServerMetrics } from './metrics.js';

export interface MetricsHttpOptions {
  metrics: ServerMetrics;
  /** Why the server is not ready, or null when it is. */
  notReady: () => string | null;
}

export class MetricsHttpServer {
  private readonly server: Server;

  constructor(private readonly opts: MetricsHttpOptions) {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?', 1)[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('only GET\n');
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const why = this.opts.notReady();
        res.writeHead(why === null ? 200 : 503, { 'content-type': 'text/plain' }).end(why === null ? 'ready\n' : `not ready: ${why}\n`);
      } else if (path === '/metrics') {
        this.opts.metrics.text().then(
          (text) => res.writeHead(200, { 'content-type': this.opts.metrics.contentType }).end(text),
          (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
      }
    });
    // Probes and scrapers open short connections; none may keep the process from exiting.
    this.server.keepAliveTimeout = 5000;
  }

  /** Binds host:port (0 = a free port); a port in use is a DfaissError naming it and what to do. */
  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        this.server.off('listening', onListening);
        reject(listenError(err, host, port, '--metrics-port'));
      };
      const onListening = (): void => {
        this.server.off('error', onError);
        const a = this.server.address() as AddressInfo;
        resolve({ host: a.address, port: a.port });
      };
      this.server.once('error', onError);
      this.server.once('listening', onListening);
      this.server.listen(port, host);
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** A bind failure as one sentence naming the address and the fix (no stack trace at the CLI). */
export function listenError(err: NodeJS.ErrnoException, host: string, port: number, flag: string): Error {
  if (err.code === 'EADDRINUSE') {
    return new DfaissError(`port ${port} on ${host} is already in use (${flag}): stop the process holding it (e.g. \`ss -ltnp 'sport = :${port}'\`), or pick another port (0 = any free one)`, { cause: err });
  }
  if (err.code === 'EACCES') {
    return new DfaissError(`not allowed to listen on port ${port} on ${host} (${flag}): ports below 1024 need root; pick a port from 1024 up`, { cause: err });
  }
  if (err.code === 'EADDRNOTAVAIL') {
    return new DfaissError(`cannot bind ${host}:${port} (${flag} / --host): ${host} is not an address of this machine`, { cause: err });
  }
  return new DfaissError(`cannot listen on ${host}:${port} (${flag}): ${err.message}`, { cause: err });
}
