import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { trackOpen } from './open-resources';

/** The port a URL means when it names none. */
const DEFAULT_PORTS: Readonly<Record<string, number>> = { 'postgres:': 5432, 'postgresql:': 5432, 'amqp:': 5672, 'amqps:': 5671 };

/**
 * A TCP proxy between the relay and a service, for fault injection without touching
 * the shared services: `cut()` drops every connection and refuses new ones until
 * `restore()`.
 */
export class TcpProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private refusing = false;
  /** Added to every chunk in both directions (ms): a slow network or a slow broker. */
  latencyMs = 0;
  port = 0;
  private untrack: () => void = () => undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private targetHost: string,
    private targetPort: number,
  ) {
    this.server = createServer((client) => this.accept(client));
  }

  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetHost, targetPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.server.address() as AddressInfo).port;
    proxy.untrack = trackOpen(proxy, { kind: 'TCP proxy', detail: `127.0.0.1:${proxy.port} → ${targetHost}:${targetPort}` });
    return proxy;
  }

  /**
   * A proxy to the service a PostgreSQL or AMQP URL points at; `proxy.url(target)`
   * then gives the same URL through the proxy.
   */
  static inFrontOf(target: string): Promise<TcpProxy> {
    const url = new URL(target);
    const port = url.port === '' ? DEFAULT_PORTS[url.protocol] : Number(url.port);
    if (port === undefined) throw new Error(`no default port known for ${url.protocol} URLs`);
    return TcpProxy.start(url.hostname, port);
  }

  /** Rewrites a URL's host and port to go through this proxy. */
  url(target: string): string {
    const url = new URL(target);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  get connections(): number {
    return this.sockets.size / 2;
  }

  private accept(client: Socket): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(this.targetPort, this.targetHost);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        this.sockets.delete(a);
        b.destroy();
      });
      // Bytes must keep their order when the latency changes: each chunk is released no
      // earlier than the one before it (timers of equal or later expiry fire in order).
      let releaseAt = 0;
      let pending = 0;
      a.on('data', (chunk: Buffer) => {
        const now = Date.now();
        releaseAt = Math.max(now + this.latencyMs, releaseAt);
        if (releaseAt <= now && pending === 0) {
          b.write(chunk);
          return;
        }
        pending += 1;
        setTimeout(() => {
          pending -= 1;
          if (!b.destroyed) b.write(chunk);
        }, releaseAt - now);
      });
    }
  }

  /** Drops every connection and refuses new ones. */
  cut(): void {
    this.refusing = true;
    for (const socket of this.sockets) socket.destroy();
  }

  restore(): void {
    this.refusing = false;
  }

  /**
   * Sends new connections to `host:port` from now on (the proxy's own port stays): a
   * stable address in front of a service that moves, such as the database node that
   * takes a failed one's place. Open connections keep their upstream.
   */
  retarget(host: string, port: number): void {
    this.targetHost = host;
    this.targetPort = port;
  }

  /** Drops every connection and stops listening. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.cut();
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.untrack();
    })();
    return this.closing;
  }
}
