/**
 * The signature of a message (docs/signing.md): the canonical form both the relay, which
 * signs, and the consumer, which verifies, build from what travels in the AMQP message,
 * and the `x-outbox-signature` header that carries the result. Imports nothing of the
 * relay, so the consumer library can use it on its own.
 *
 * Canonical form, version 1: ten fields, each written as its length in bytes (an unsigned
 * 32-bit big-endian integer) followed by its bytes:
 *  1. the version tag `outbox-signature-v1` (ASCII);
 *  2. the key id (UTF-8);
 *  3. the AMQP `message-id` (UTF-8);
 *  4. the AMQP `type` (UTF-8; empty when absent);
 *  5. the AMQP `timestamp`, integer seconds as sent, in decimal ASCII (empty when absent);
 *  6. the AMQP `content-type` (UTF-8; empty when absent);
 *  7. the exchange the message was published to (UTF-8; empty for the default exchange);
 *  8. the routing key it was published with (UTF-8);
 *  9. the message's headers less the excluded ones (`isCoveredHeader`) as canonical JSON
 *     (`canonicalJson`, RFC 8785's form), UTF-8;
 * 10. the body, as sent.
 */

/** The header that carries the signature. */
export const SIGNATURE_HEADER = 'x-outbox-signature';

/** Field 1 of the canonical form, and the `v1` of the header. */
export const CANONICAL_VERSION_TAG = 'outbox-signature-v1';

/** A key id: letters, digits and `._:-`, 1 to 64 characters (it sits in the header between `;`). */
export const KEY_ID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * Headers the signature does not cover: the relay's and the consumer's own `x-outbox-*`
 * (the signature itself, the partition key and position, the attempts of a retried copy),
 * those the broker adds on the way (`x-death`, `x-first-death-*`, `x-last-death-*`,
 * `x-delivery-count`, `x-stream-*`) and `BCC`, which RabbitMQ removes before delivery.
 */
const UNCOVERED_HEADER = /^(x-outbox-|x-death$|x-first-death-|x-last-death-|x-delivery-count$|x-stream-|BCC$)/;

/** Whether the signature covers a top-level header of this name. */
export function isCoveredHeader(name: string): boolean {
  return !UNCOVERED_HEADER.test(name);
}

/** What the canonical form is built from, as it travels in the AMQP message. */
export interface SignedFields {
  readonly keyId: string;
  readonly messageId: string;
  readonly type: string | undefined;
  /** AMQP `timestamp`: integer seconds. */
  readonly timestamp: number | undefined;
  readonly contentType: string | undefined;
  readonly exchange: string;
  readonly routingKey: string;
  /** The covered headers as canonical JSON (`canonicalHeaders`). */
  readonly headersJson: string;
  readonly body: Buffer;
}

/** The bytes that are signed (see the module's comment). */
export function canonicalBytes(fields: SignedFields): Buffer {
  const texts = [
    CANONICAL_VERSION_TAG,
    fields.keyId,
    fields.messageId,
    fields.type ?? '',
    fields.timestamp === undefined ? '' : String(fields.timestamp),
    fields.contentType ?? '',
    fields.exchange,
    fields.routingKey,
    fields.headersJson,
  ];
  const lengths = texts.map((text) => Buffer.byteLength(text, 'utf8'));
  const total = lengths.reduce((sum, n) => sum + 4 + n, 4 + fields.body.length);
  const out = Buffer.allocUnsafe(total);
  let offset = 0;
  texts.forEach((text, index) => {
    offset = out.writeUInt32BE(lengths[index] as number, offset);
    offset += out.write(text, offset, 'utf8');
  });
  offset = out.writeUInt32BE(fields.body.length, offset);
  fields.body.copy(out, offset);
  return out;
}

/** A header value that has no canonical JSON (a byte array, a decimal, an AMQP timestamp, a function…). */
export class UncanonicalHeader extends Error {}

/**
 * The covered top-level headers (`isCoveredHeader`) as canonical JSON; `{}` without any.
 * Throws `UncanonicalHeader` for a value JSON cannot hold.
 */
export function canonicalHeaders(headers: Readonly<Record<string, unknown>> | undefined): string {
  const covered: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (headers) for (const name of Object.keys(headers)) if (isCoveredHeader(name)) covered[name] = headers[name];
  return canonicalJson(covered);
}

/**
 * RFC 8785 (JSON Canonicalization Scheme): object keys sorted by UTF-16 code units, no
 * whitespace, strings and numbers as ECMAScript's JSON.stringify writes them (so 1.0 is
 * `1`, 1e21 is `1e+21`). A bigint (the relay reads JSON integers exactly) is written in
 * decimal, exactly: beyond ±(2^53−1) a JavaScript consumer (amqplib decodes it to a
 * double) cannot verify it.
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      return value.toString();
    case 'number':
      if (!Number.isFinite(value)) throw new UncanonicalHeader('a number that is not finite');
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw new UncanonicalHeader(`a value of type ${typeof value}`);
  }
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item)).join(',')}]`;
  if (Buffer.isBuffer(value) || ArrayBuffer.isView(value)) throw new UncanonicalHeader('a byte array');
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== null && proto !== Object.prototype) throw new UncanonicalHeader('an object that is not plain');
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).sort();
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`;
}

/** `v1;kid=<key id>;sig=<base64 of the 64-byte Ed25519 signature>`. */
export function signatureHeader(keyId: string, signature: Buffer): string {
  return `v1;kid=${keyId};sig=${signature.toString('base64')}`;
}

/** A parsed `x-outbox-signature`; undefined when it is not of the form above. */
export function parseSignatureHeader(text: string): { readonly keyId: string; readonly signature: Buffer } | undefined {
  const match = /^v1;kid=([A-Za-z0-9._:-]{1,64});sig=([A-Za-z0-9+/]{86}==)$/.exec(text);
  if (!match) return undefined;
  const signature = Buffer.from(match[2] as string, 'base64');
  return signature.length === 64 ? { keyId: match[1] as string, signature } : undefined;
}
