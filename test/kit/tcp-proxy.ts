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
  /** Added to every chunk in both directions (ms): a slow network or a slow broker. A change applies to the chunks that arrive after it; bytes always keep their order. */
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
      const forward = new DelayedForwarder(b, () => this.latencyMs);
      a.on('data', (chunk: Buffer) => forward.push(chunk));
      a.on('close', () => forward.clear());
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

/**
 * One direction of a proxied connection: each chunk is written to `to` once it has been
 * held for the latency in force when it arrived, and never before the chunks that
 * arrived earlier. One FIFO queue and at most one timer: a timer per chunk releases
 * chunks out of order when the latency drops (Node keeps a timer list per duration, and
 * a later chunk with a shorter delay can fire first).
 */
class DelayedForwarder {
  private readonly queue: { readonly chunk: Buffer; readonly releaseAt: number }[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly to: Socket,
    private readonly latencyMs: () => number,
  ) {}

  push(chunk: Buffer): void {
    const latencyMs = this.latencyMs();
    if (latencyMs <= 0 && this.queue.length === 0) {
      if (!this.to.destroyed) this.to.write(chunk);
      return;
    }
    this.queue.push({ chunk, releaseAt: Date.now() + latencyMs });
    this.timer ??= setTimeout(() => this.release(), latencyMs);
  }

  /** Forgets what is still held (the connection is gone). */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }

  private release(): void {
    this.timer = undefined;
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0]!.releaseAt <= now) {
      const { chunk } = this.queue.shift()!;
      if (!this.to.destroyed) this.to.write(chunk);
    }
    const next = this.queue[0];
    if (next) this.timer = setTimeout(() => this.release(), next.releaseAt - now);
  }
}
