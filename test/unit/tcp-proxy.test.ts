import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { TcpProxy } from '../kit/tcp-proxy';

// The test kit's TCP proxy slows a connection by holding each chunk for `latencyMs`.
// Whatever the latency does meanwhile, a stream must come out as it went in: the chaos
// suite's "broker slow" fault drops the latency back to 0 while a relay publishes, and
// bytes that overtake each other there break AMQP frames or reorder a key's messages
// (a false per-key order failure in chaos once: seed 1366549483).

const CHUNKS = 400;

/** A server that collects everything it receives on its one connection. */
async function sink(): Promise<{ server: Server; port: number; received: () => Buffer; closed: Promise<void> }> {
  const parts: Buffer[] = [];
  let done: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => {
    done = resolve;
  });
  const server = createServer((socket) => {
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.on('close', () => done());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, received: () => Buffer.concat(parts), closed };
}

/** Chunk i: its number, so a reordering shows which chunk overtook which. */
const chunk = (i: number): Buffer => Buffer.from(`<${i}>`);

function firstOutOfOrder(received: string): string | undefined {
  const numbers = [...received.matchAll(/<(\d+)>/g)].map((m) => Number(m[1]));
  const at = numbers.findIndex((n, i) => n !== i);
  return at < 0 ? undefined : `chunk ${numbers[at]} arrived where chunk ${at} belongs (then ${numbers.slice(at + 1, at + 4).join(', ')})`;
}

async function send(client: Socket, proxy: TcpProxy, latencyFor: (i: number) => number): Promise<void> {
  for (let i = 0; i < CHUNKS; i += 1) {
    proxy.latencyMs = latencyFor(i);
    client.write(chunk(i));
    // Each chunk its own 'data' event at the proxy.
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

describe('TcpProxy latency', () => {
  let target: Awaited<ReturnType<typeof sink>>;
  let proxy: TcpProxy;
  let client: Socket;

  beforeEach(async () => {
    target = await sink();
    proxy = await TcpProxy.start('127.0.0.1', target.port);
    client = connect(proxy.port, '127.0.0.1');
    await once(client, 'connect');
  });

  afterEach(async () => {
    client.destroy();
    await proxy.close();
    await new Promise<void>((resolve) => target.server.close(() => resolve()));
  });

  const expectInOrder = async (): Promise<void> => {
    const expected = Buffer.concat(Array.from({ length: CHUNKS }, (_, i) => chunk(i))).toString();
    const deadline = Date.now() + 10_000;
    while (target.received().length < expected.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    const received = target.received().toString();
    expect(firstOutOfOrder(received)).toBeUndefined();
    expect(received).toBe(expected);
  };

  test('keeps the bytes in order when the latency drops from 50 ms to 0 while data flows', async () => {
    await send(client, proxy, (i) => (i % 20 < 10 ? 50 : 0));
    await expectInOrder();
  });

  test('keeps the bytes in order when the latency changes with every chunk', async () => {
    await send(client, proxy, (i) => (i * 37) % 60);
    await expectInOrder();
  });

  test('holds a chunk for the latency', async () => {
    proxy.latencyMs = 200;
    const sentAt = Date.now();
    client.write(chunk(0));
    while (target.received().length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(190);
  });
});
