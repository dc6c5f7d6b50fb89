import { dirname, join } from 'node:path';

/**
 * amqplib's own encoders, loaded from its files (its package exports only the channel
 * APIs): the unit tests check the relay's limits against what amqplib really refuses.
 */
const LIB = join(dirname(require.resolve('amqplib')), 'lib');

interface Defs {
  readonly BasicPublish: number;
  readonly BasicProperties: number;
  encodeMethod(id: number, channel: number, fields: unknown): Buffer;
  encodeProperties(id: number, channel: number, size: number, fields: unknown): Buffer;
}
interface Codec {
  encodeTable(buffer: Buffer, value: unknown, offset: number): number;
}
interface Args {
  publish(exchange: string, routingKey: string, options: unknown): unknown;
}

/* eslint-disable @typescript-eslint/no-require-imports -- amqplib's internal files have no typed entry point */
const defs = require(join(LIB, 'defs.js')) as Defs;
const codec = require(join(LIB, 'codec.js')) as Codec;
const args = require(join(LIB, 'api_args.js')) as Args;
/* eslint-enable @typescript-eslint/no-require-imports */

/**
 * Encodes a `basic.publish` and its content header exactly as `channel.publish` does
 * (the same fields object serves both), throwing what amqplib throws.
 */
export function amqplibEncodePublish(exchange: string, routingKey: string, content: Buffer, options: unknown): void {
  const fields = args.publish(exchange, routingKey, options);
  defs.encodeMethod(defs.BasicPublish, 1, fields);
  defs.encodeProperties(defs.BasicProperties, 1, content.length, fields);
}

/** Encodes `headers` as amqplib encodes a message's headers (into its 64 KiB buffer); returns the bytes, table length included. */
export function amqplibEncodeHeaders(headers: unknown): Buffer {
  const scratch = Buffer.alloc(65_536);
  const length = codec.encodeTable(scratch, headers, 0);
  return scratch.subarray(0, length);
}
