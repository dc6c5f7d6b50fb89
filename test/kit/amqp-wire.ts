import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * The tests' own reading of AMQP 0-9-1, independent of amqplib's decoder (which turns a
 * 64-bit integer into a JavaScript number, so it cannot show whether 9007199254740993
 * arrived exactly): a field-table decoder, and a tap that reads the frames a broker
 * sends to a client through a TCP pass-through.
 */

/**
 * A decoded field value: `l` (signed 64-bit) as a bigint, `d` as a number, `S` as a
 * string, `F` as an object, `A` as an array, `t` as a boolean, `V` as null. Any other
 * tag (the relay sends none) is kept as `{ tag, value }`, so a test sees it.
 */
export type WireValue = bigint | number | string | boolean | null | WireValue[] | { [key: string]: WireValue } | WireOther;
export interface WireOther {
  readonly tag: string;
  readonly value: number | string;
}

/** Decodes one field table (`buf` holds its fields, without the 4-byte length). */
export function decodeFieldTable(buf: Buffer): { [key: string]: WireValue } {
  const table: { [key: string]: WireValue } = {};
  let offset = 0;
  while (offset < buf.length) {
    const keyLength = buf.readUInt8(offset);
    const key = buf.toString('utf8', offset + 1, offset + 1 + keyLength);
    offset += 1 + keyLength;
    const [value, next] = decodeValue(buf, offset);
    Object.defineProperty(table, key, { value, enumerable: true, writable: true, configurable: true });
    offset = next;
  }
  return table;
}

function decodeValue(buf: Buffer, offset: number): [WireValue, number] {
  const tag = String.fromCharCode(buf.readUInt8(offset));
  const at = offset + 1;
  switch (tag) {
    case 'l':
      return [buf.readBigInt64BE(at), at + 8];
    case 'd':
      return [buf.readDoubleBE(at), at + 8];
    case 't':
      return [buf.readUInt8(at) !== 0, at + 1];
    case 'V':
      return [null, at];
    case 'S': {
      const length = buf.readUInt32BE(at);
      return [buf.toString('utf8', at + 4, at + 4 + length), at + 4 + length];
    }
    case 'F': {
      const length = buf.readUInt32BE(at);
      return [decodeFieldTable(buf.subarray(at + 4, at + 4 + length)), at + 4 + length];
    }
    case 'A': {
      const length = buf.readUInt32BE(at);
      const items: WireValue[] = [];
      let position = at + 4;
      while (position < at + 4 + length) {
        const [item, next] = decodeValue(buf, position);
        items.push(item);
        position = next;
      }
      return [items, at + 4 + length];
    }
    case 'b':
      return [{ tag, value: buf.readInt8(at) }, at + 1];
    case 's':
      return [{ tag, value: buf.readInt16BE(at) }, at + 2];
    case 'I':
      return [{ tag, value: buf.readInt32BE(at) }, at + 4];
    case 'f':
      return [{ tag, value: buf.readFloatBE(at) }, at + 4];
    default:
      throw new Error(`field tag ${JSON.stringify(tag)} at offset ${offset} is not decoded by this test reader`);
  }
}

/** One message as the broker sent it to the client, read from the wire. */
export interface WireDelivery {
  readonly exchange: string;
  readonly routingKey: string;
  readonly contentType?: string;
  readonly headers?: { [key: string]: WireValue };
  readonly deliveryMode?: number;
  readonly correlationId?: string;
  readonly messageId?: string;
  readonly timestamp?: bigint;
  readonly type?: string;
  readonly appId?: string;
  readonly body: Buffer;
}

const FRAME_METHOD = 1;
const FRAME_HEADER = 2;
const FRAME_BODY = 3;
const BASIC_CLASS = 60;
const BASIC_DELIVER = 60;
const BASIC_GET_OK = 71;

/** Reads `basic.deliver` / `basic.get-ok` with their content from a byte stream (server → client). */
class FrameReader {
  private pending = Buffer.alloc(0);
  /** Per channel: the delivery being assembled. */
  private readonly open = new Map<
    number,
    {
      method: { exchange: string; routingKey: string };
      props?: Omit<WireDelivery, 'exchange' | 'routingKey' | 'body'>;
      size?: bigint;
      body: Buffer[];
    }
  >();

  constructor(private readonly onDelivery: (delivery: WireDelivery) => void) {}

  push(chunk: Buffer): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    for (;;) {
      if (this.pending.length < 7) return;
      const size = this.pending.readUInt32BE(3);
      if (this.pending.length < 7 + size + 1) return;
      const type = this.pending.readUInt8(0);
      const channel = this.pending.readUInt16BE(1);
      const payload = this.pending.subarray(7, 7 + size);
      this.pending = this.pending.subarray(7 + size + 1);
      this.frame(type, channel, Buffer.from(payload));
    }
  }

  private frame(type: number, channel: number, payload: Buffer): void {
    if (type === FRAME_METHOD) {
      const classId = payload.readUInt16BE(0);
      const methodId = payload.readUInt16BE(2);
      if (classId !== BASIC_CLASS || (methodId !== BASIC_DELIVER && methodId !== BASIC_GET_OK)) return;
      let offset = 4;
      if (methodId === BASIC_DELIVER) offset += 1 + payload.readUInt8(offset); // consumer tag
      offset += 8 + 1; // delivery tag, redelivered
      const exchangeLength = payload.readUInt8(offset);
      const exchange = payload.toString('utf8', offset + 1, offset + 1 + exchangeLength);
      offset += 1 + exchangeLength;
      const keyLength = payload.readUInt8(offset);
      const routingKey = payload.toString('utf8', offset + 1, offset + 1 + keyLength);
      this.open.set(channel, { method: { exchange, routingKey }, body: [] });
    } else if (type === FRAME_HEADER) {
      const delivery = this.open.get(channel);
      if (!delivery) return;
      delivery.size = payload.readBigUInt64BE(4);
      delivery.props = decodeProperties(payload.subarray(12));
      this.finishIfComplete(channel);
    } else if (type === FRAME_BODY) {
      this.open.get(channel)?.body.push(payload);
      this.finishIfComplete(channel);
    }
  }

  private finishIfComplete(channel: number): void {
    const delivery = this.open.get(channel);
    if (!delivery || delivery.size === undefined) return;
    const body = Buffer.concat(delivery.body);
    if (BigInt(body.length) < delivery.size) return;
    this.open.delete(channel);
    this.onDelivery({ ...delivery.method, ...delivery.props, body });
  }
}

/** The basic properties of a content header, after the class, weight and body size. */
function decodeProperties(buf: Buffer): Omit<WireDelivery, 'exchange' | 'routingKey' | 'body'> {
  const flags = buf.readUInt16BE(0);
  let offset = 2;
  const has = (bit: number): boolean => (flags & (1 << bit)) !== 0;
  const shortString = (): string => {
    const length = buf.readUInt8(offset);
    const text = buf.toString('utf8', offset + 1, offset + 1 + length);
    offset += 1 + length;
    return text;
  };
  const props: Record<string, unknown> = {};
  if (has(15)) props['contentType'] = shortString();
  if (has(14)) props['contentEncoding'] = shortString();
  if (has(13)) {
    const length = buf.readUInt32BE(offset);
    props['headers'] = decodeFieldTable(buf.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  if (has(12)) props['deliveryMode'] = buf.readUInt8(offset++);
  if (has(11)) props['priority'] = buf.readUInt8(offset++);
  if (has(10)) props['correlationId'] = shortString();
  if (has(9)) props['replyTo'] = shortString();
  if (has(8)) props['expiration'] = shortString();
  if (has(7)) props['messageId'] = shortString();
  if (has(6)) {
    props['timestamp'] = buf.readBigUInt64BE(offset);
    offset += 8;
  }
  if (has(5)) props['type'] = shortString();
  if (has(4)) props['userId'] = shortString();
  if (has(3)) props['appId'] = shortString();
  return props;
}

/**
 * A TCP pass-through to the broker that reads, on the way, every message the broker
 * delivers to the client connected through it. Connect an AMQP client to `url()`.
 */
export class WireTap {
  readonly deliveries: WireDelivery[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    private readonly target: URL,
  ) {}

  /** Listens on 127.0.0.1 (a free port) in front of the broker at `amqpUrl`. */
  static async start(amqpUrl: string): Promise<WireTap> {
    const target = new URL(amqpUrl);
    const server = createServer();
    const tap = new WireTap(server, target);
    server.on('connection', (client) => tap.pass(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return tap;
  }

  /** The broker's URL with its host and port replaced by the tap's. */
  url(): string {
    const url = new URL(this.target.href);
    url.hostname = '127.0.0.1';
    url.port = String((this.server.address() as AddressInfo).port);
    return url.href;
  }

  private pass(client: Socket): void {
    const upstream = tcpConnect(Number(this.target.port || 5672), this.target.hostname);
    const reader = new FrameReader((delivery) => this.deliveries.push(delivery));
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
