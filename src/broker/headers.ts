import type { HeaderTable, HeaderValue, OutboxMessage } from '../domain/message';
import { RELAY_HEADERS } from '../domain/relay-headers';

/** A field-table key is an AMQP short string: one length octet, at most 255 bytes of UTF-8. */
export const HEADER_KEY_MAX_BYTES = 255;
/** amqplib encodes a message's headers into a fixed buffer of 64 KiB (defs.js `SCRATCH`); more throws. */
export const HEADERS_MAX_BYTES = 65_536;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** RabbitMQ routes by these headers (sender-selected distribution) and closes the channel unless they are arrays. */
const ROUTING_HEADERS = ['CC', 'BCC'];

/** The headers as amqplib encodes them exactly, and their encoded size. */
export type EncodedHeaders =
  { readonly ok: true; readonly table: Record<string, unknown>; readonly bytes: number } | { readonly ok: false; readonly error: string };

/** Thrown inside the walk, returned as `{ ok: false }`. */
class HeaderProblem extends Error {}

/**
 * The row's headers in amqplib's terms, chosen explicitly so that nothing is guessed:
 * - an integer (bigint) becomes an AMQP signed 64-bit integer (`l`), `{ '!': 'int64' }`;
 *   one outside signed 64 bits is a problem (never a rounded double);
 * - any other number becomes a double (`d`), `{ '!': 'double' }`;
 * - a nested object becomes a field table (`F`), always: wrapped as `{ '!': 'object',
 *   value }`, so a key named `!` inside it is a plain key, not amqplib's type hint (the
 *   top level is encoded as a table directly, where `!` is plain already);
 * - strings (long strings, `S`), booleans, null (`V`) and arrays (`A`) as they are.
 *
 * Problems — a key over 255 bytes (at any depth), an integer beyond 64 bits, headers
 * encoding to more than amqplib's 64 KiB, a CC or BCC header that is not an array —
 * come back as one error naming the header and the limit in bytes.
 */
export function encodeHeaders(headers: HeaderTable): EncodedHeaders {
  try {
    for (const key of ROUTING_HEADERS) {
      const value = Object.hasOwn(headers, key) ? headers[key] : undefined;
      if (value !== undefined && !Array.isArray(value)) {
        throw new HeaderProblem(
          `header "${key}" must be an array of strings: RabbitMQ routes the message by it (sender-selected distribution)`,
        );
      }
    }
    const { table, bytes } = encodeTable(headers, []);
    if (bytes > HEADERS_MAX_BYTES) {
      return {
        ok: false,
        error: `headers are ${bytes} bytes encoded; the AMQP client encodes at most ${HEADERS_MAX_BYTES} bytes of headers`,
      };
    }
    return { ok: true, table, bytes };
  } catch (err: unknown) {
    if (err instanceof HeaderProblem) return { ok: false, error: err.message };
    throw err;
  }
}

/**
 * The headers a message is published with: the row's `headers` plus RELAY_HEADERS. The
 * relay's values win: a header of the same name in the row is replaced, or dropped when
 * the row has no key, so that no producer can make a message claim another key or place.
 */
export function publishedHeaders(message: Pick<OutboxMessage, 'id' | 'partitionKey' | 'headers'>): HeaderTable {
  const headers: Record<string, HeaderValue> = Object.create(null) as Record<string, HeaderValue>;
  for (const key of Object.keys(message.headers)) {
    if (key !== RELAY_HEADERS.partitionKey && key !== RELAY_HEADERS.position) headers[key] = message.headers[key] as HeaderValue;
  }
  if (message.partitionKey !== null) headers[RELAY_HEADERS.partitionKey] = message.partitionKey;
  // A row that could not be read (a defect) may lack a numeric id: it is never sent anyway.
  if (/^-?\d+$/.test(message.id)) headers[RELAY_HEADERS.position] = BigInt(message.id);
  return headers;
}

/** Where a value sits in the headers: keys, and indexes of arrays. */
type Path = readonly (string | number)[];

/** A field table: 4 length bytes, then per key a length octet, the key and the tagged value. */
function encodeTable(source: HeaderTable, path: Path): { table: Record<string, unknown>; bytes: number } {
  // No prototype: a key named `__proto__` is a plain key too.
  const table = Object.create(null) as Record<string, unknown>;
  let bytes = 4;
  for (const key of Object.keys(source)) {
    const keyBytes = Buffer.byteLength(key, 'utf8');
    if (keyBytes > HEADER_KEY_MAX_BYTES) {
      const where = path.length > 0 ? ` (in header ${pathText(path)})` : '';
      throw new HeaderProblem(`header key ${quoted(key)} is ${keyBytes} bytes${where}; AMQP allows at most ${HEADER_KEY_MAX_BYTES} bytes`);
    }
    const field = encodeValue(source[key] as HeaderValue, [...path, key]);
    table[key] = field.value;
    bytes += 1 + keyBytes + field.bytes;
  }
  return { table, bytes };
}

/** One tagged field value: its amqplib form and its encoded size (the tag octet included). */
function encodeValue(value: HeaderValue, path: Path): { value: unknown; bytes: number } {
  if (value === null) return { value: null, bytes: 1 };
  switch (typeof value) {
    case 'string':
      return { value, bytes: 1 + 4 + Buffer.byteLength(value, 'utf8') };
    case 'boolean':
      return { value, bytes: 1 + 1 };
    case 'bigint':
      if (value < INT64_MIN || value > INT64_MAX) {
        throw new HeaderProblem(
          `header ${pathText(path)} is the integer ${value}, beyond AMQP's signed 64-bit integers (${INT64_MIN} to ${INT64_MAX})`,
        );
      }
      return { value: { '!': 'int64', value }, bytes: 1 + 8 };
    case 'number':
      if (!Number.isFinite(value)) throw new HeaderProblem(`header ${pathText(path)} is a number beyond the range of a double`);
      return { value: { '!': 'double', value }, bytes: 1 + 8 };
    default:
      break;
  }
  if (Array.isArray(value)) {
    const items = value as readonly HeaderValue[];
    let bytes = 1 + 4;
    const encoded = items.map((item, index) => {
      const field = encodeValue(item, [...path, index]);
      bytes += field.bytes;
      return field.value;
    });
    return { value: encoded, bytes };
  }
  const nested = encodeTable(value as HeaderTable, path);
  return { value: { '!': 'object', value: nested.table }, bytes: 1 + nested.bytes };
}

/** A key as shown in an error: quoted, cut after 40 characters. */
function quoted(key: string): string {
  const chars = [...key];
  return JSON.stringify(chars.length > 40 ? `${chars.slice(0, 40).join('')}…` : key);
}

/** `"outer"."inner"[0]`: where a value sits in the headers. */
function pathText(path: Path): string {
  return path.map((part, index) => (typeof part === 'number' ? `[${part}]` : `${index > 0 ? '.' : ''}${quoted(part)}`)).join('');
}
