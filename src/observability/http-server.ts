import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RelayHealth } from './health';
import type { Logger } from './logger';
import type { RelayMetrics } from './metrics';

/** GET /metrics (Prometheus text), /healthz (the loop is not stuck), /readyz (database and broker connected, not stalled, writes succeed; the body says why not). */
export class HttpServer {
  private readonly server: Server;

  constructor(
    private readonly metrics: RelayMetrics,
    private readonly health: RelayHealth,
    private readonly log: Logger,
  ) {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/metrics') {
        this.metrics.registry
          .metrics()
          .then((text) => res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(text))
          .catch((err: unknown) => res.writeHead(500).end(String(err)));
      } else if (path === '/healthz') {
        const ok = this.health.alive();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'relay loop stuck\n');
      } else if (path === '/readyz') {
        const ok = this.health.ready();
        const problems = this.health.problemLines().map((line) => `${line}\n`);
        const role = this.health.leading ? 'leader' : 'standby';
        const body = `database=${this.health.databaseUp ? 'up' : 'down'} broker=${this.health.brokerUp ? 'up' : 'down'} role=${role}\n${problems.join('')}`;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(body);
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
      }
    });
    this.server.keepAliveTimeout = 65_000;
  }

  /** Listens; resolves with the bound port (useful when the configured port is 0). */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const address = this.server.address() as AddressInfo;
        this.log.info({ host, port: address.port }, 'serving /metrics, /healthz and /readyz');
        resolve(address.port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
