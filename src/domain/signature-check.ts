import { verify, type KeyObject } from 'node:crypto';
import { canonicalBytes, canonicalHeaders, parseSignatureHeader, SIGNATURE_HEADER, UncanonicalHeader } from './signature';

/** Why a signature was refused: the `reason` label of `outbox_consumer_signature_refusals_total`. */
export type SignatureRefusal = 'missing' | 'malformed' | 'unknown_key' | 'bad_signature';

/** A delivery as far as its signature is concerned (an amqplib `ConsumeMessage` is one). */
export interface SignedDelivery {
  readonly content: Buffer;
  readonly properties: {
    readonly messageId?: unknown;
    readonly type?: unknown;
    readonly timestamp?: unknown;
    readonly contentType?: unknown;
    readonly headers?: unknown;
  };
}

export type SignatureVerdict =
  | { readonly ok: true; readonly keyId: string | undefined }
  | { readonly ok: false; readonly reason: SignatureRefusal; readonly keyId?: string; readonly detail: string };

/**
 * Checks the `x-outbox-signature` of a delivery against the trusted public keys, by key
 * id, rebuilding the canonical form from the delivery's properties and body and from
 * `route`, the exchange and routing key it was first published with. A message without
 * a signature is `missing` unless `acceptUnsigned` (then ok with no key id).
 */
export function checkSignature(
  delivery: SignedDelivery,
  route: { readonly exchange: string; readonly routingKey: string },
  keys: ReadonlyMap<string, KeyObject>,
  acceptUnsigned: boolean,
): SignatureVerdict {
  const p = delivery.properties;
  const headers = (p.headers ?? undefined) as Record<string, unknown> | undefined;
  const raw = headers?.[SIGNATURE_HEADER];
  if (raw === undefined) {
    return acceptUnsigned ? { ok: true, keyId: undefined } : { ok: false, reason: 'missing', detail: `no ${SIGNATURE_HEADER} header` };
  }
  const text = typeof raw === 'string' ? raw : Buffer.isBuffer(raw) ? raw.toString('utf8') : undefined;
  const parsed = text === undefined ? undefined : parseSignatureHeader(text);
  if (!parsed) return { ok: false, reason: 'malformed', detail: `${SIGNATURE_HEADER} is not of the form v1;kid=<id>;sig=<base64>` };
  const key = keys.get(parsed.keyId);
  if (!key) return { ok: false, reason: 'unknown_key', keyId: parsed.keyId, detail: `unknown key id "${parsed.keyId}"` };
  const messageId = optionalText(p.messageId);
  const type = optionalText(p.type);
  const contentType = optionalText(p.contentType);
  const timestamp = p.timestamp === undefined || p.timestamp === null ? undefined : p.timestamp;
  if (messageId === null || type === null || contentType === null || (timestamp !== undefined && !Number.isSafeInteger(timestamp))) {
    return { ok: false, reason: 'bad_signature', keyId: parsed.keyId, detail: 'a signed property has an unexpected type' };
  }
  let headersJson: string;
  try {
    headersJson = canonicalHeaders(headers);
  } catch (err: unknown) {
    if (!(err instanceof UncanonicalHeader)) throw err;
    return { ok: false, reason: 'bad_signature', keyId: parsed.keyId, detail: `a header holds ${err.message}, which is never signed` };
  }
  const data = canonicalBytes({
    keyId: parsed.keyId,
    messageId: messageId ?? '',
    type,
    timestamp: timestamp as number | undefined,
    contentType,
    exchange: route.exchange,
    routingKey: route.routingKey,
    headersJson,
    body: delivery.content,
  });
  if (verify(null, data, key, parsed.signature)) return { ok: true, keyId: parsed.keyId };
  return {
    ok: false,
    reason: 'bad_signature',
    keyId: parsed.keyId,
    detail: `the signature (key id "${parsed.keyId}") does not match the message`,
  };
}

/** A text property: undefined when absent, null when it is not text. */
function optionalText(value: unknown): string | undefined | null {
  if (value === undefined || value === null) return undefined;
  return typeof value === 'string' ? value : null;
}
