import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { trackOpen } from './open-resources';

/**
 * A TCP proxy whose open connections can be frozen: `freeze()` stops forwarding bytes
 * on them, both ways, while keeping them open — a network that goes silent without a
 * reset, which only heartbeats (or keepalives) can tell from a quiet one. Connections
 * made after the freeze flow normally; a frozen connection that one end closes stays
 * open (silent) at the other. Unlike TcpProxy's latency, it holds no timers.
 */
export class FreezingProxy {
  private readonly server: Server;
  private readonly pairs = new Set<readonly [Socket, Socket]>();
  private readonly frozen = new Set<Socket>();
  port = 0;
  private untrack: () => void = () => undefined;

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.server = createServer((client) => this.accept(client));
  }

  /** A proxy to the service an AMQP or PostgreSQL URL (with its port) points at. */
  static async inFrontOf(target: string): Promise<FreezingProxy> {
    const url = new URL(target);
    const proxy = new FreezingProxy(url.hostname, Number(url.port || (url.protocol.startsWith('amqp') ? 5672 : 5432)));
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.server.address() as AddressInfo).port;
    proxy.untrack = trackOpen(proxy, { kind: 'TCP proxy', detail: `freezing 127.0.0.1:${proxy.port} → ${url.hostname}:${url.port}` });
    return proxy;
  }

  /** Rewrites a URL's host and port to go through this proxy. */
  url(target: string): string {
    const url = new URL(target);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  private accept(client: Socket): void {
    const upstream = connect(this.targetPort, this.targetHost);
    const pair = [client, upstream] as const;
    this.pairs.add(pair);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      a.on('error', () => {
        if (!this.frozen.has(b)) b.destroy();
      });
      a.on('close', () => {
        this.pairs.delete(pair);
        this.frozen.delete(a);
        // A frozen connection does not pass on a close either: the other end must find out by itself.
        if (!this.frozen.has(b)) b.destroy();
      });
      a.pipe(b);
    }
  }

  /** Stops forwarding on every connection open now; they stay open until either end gives up. */
  freeze(): void {
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
      this.frozen.add(client);
      this.frozen.add(upstream);
    }
  }

  async close(): Promise<void> {
    for (const socket of this.frozen) socket.destroy();
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.untrack();
  }
}
