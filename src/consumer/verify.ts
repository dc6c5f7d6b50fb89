import { createPublicKey, KeyObject } from 'node:crypto';
import type { ConsumeMessage } from 'amqplib';
import { checkSignature, type SignatureRefusal } from '../domain/signature-check';
import { KEY_ID_PATTERN } from '../domain/signature';
import { HEADER, headerText } from './inbox';
import type { ConsumerMetrics } from './metrics';
import type { ConsumerLogger, ConsumerVerifyOption } from './options';

/** The `verify` option, checked: the trusted public keys by key id, and the unsigned policy. */
export interface VerifySettings {
  readonly keys: ReadonlyMap<string, KeyObject>;
  readonly acceptUnsigned: boolean;
}

/** Distinct causes logged at most (an unknown key id is a cause of its own): the log stays bounded. */
const MAX_LOGGED_CAUSES = 64;

/** Checks the `verify` option into `VerifySettings`; problems name the option. */
export function verifySettings(value: unknown, problems: string[]): VerifySettings | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null) {
    problems.push('verify must be an object { keys, unsigned }');
    return undefined;
  }
  const given = value as Partial<ConsumerVerifyOption> & Record<string, unknown>;
  for (const name of Object.keys(given)) {
    if (name !== 'keys' && name !== 'unsigned') problems.push(`unknown option ${JSON.stringify(`verify.${name}`)}`);
  }
  const unsigned = given.unsigned ?? 'reject';
  if (unsigned !== 'reject' && unsigned !== 'accept') problems.push('verify.unsigned must be "reject" or "accept"');
  const keys = new Map<string, KeyObject>();
  if (typeof given.keys !== 'object' || given.keys === null || Object.keys(given.keys).length === 0) {
    problems.push('verify.keys must be an object of at least one key id → Ed25519 public key (PEM or KeyObject)');
    return undefined;
  }
  for (const [keyId, key] of Object.entries(given.keys as Record<string, unknown>)) {
    const where = `verify.keys[${JSON.stringify(keyId.length > 64 ? `${keyId.slice(0, 64)}…` : keyId)}]`;
    if (!KEY_ID_PATTERN.test(keyId)) {
      problems.push(`${where}: a key id is 1 to 64 letters, digits or ._:-`);
      continue;
    }
    const publicKey = publicKeyOf(key);
    if (publicKey === undefined) problems.push(`${where} must be an Ed25519 public key (PEM text or a KeyObject)`);
    else keys.set(keyId, publicKey);
  }
  return Object.freeze({ keys, acceptUnsigned: unsigned === 'accept' });
}

function publicKeyOf(key: unknown): KeyObject | undefined {
  try {
    let object: KeyObject;
    if (key instanceof KeyObject) object = key.type === 'private' ? createPublicKey(key) : key;
    else if (typeof key === 'string' || Buffer.isBuffer(key)) object = createPublicKey(key);
    else return undefined;
    return object.type === 'public' && object.asymmetricKeyType === 'ed25519' ? object : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The consumer's signature check, before admission: a refused delivery never reaches the
 * inbox or the handler. Counted by reason; logged once per cause (a reason, or an
 * unknown key id), not per message.
 *
 * The exchange and routing key checked are the delivery's, except for the consumer's own
 * retried copies: one that comes back from the retry queue arrives through the default
 * exchange under the queue's name and carries the original ones in its
 * `x-outbox-consumer-exchange` and `-routing-key` headers, which are used then (and only then).
 */
export class DeliveryVerifier {
  private readonly logged = new Set<string>();

  constructor(
    private readonly settings: VerifySettings,
    private readonly queue: string,
    private readonly log: Required<ConsumerLogger>,
    private readonly metrics: ConsumerMetrics,
  ) {}

  /** Undefined: verified (or unsigned and accepted); otherwise the reason its dead letter carries. */
  refusal(msg: ConsumeMessage): string | undefined {
    const verdict = checkSignature(msg, routeOf(msg, this.queue), this.settings.keys, this.settings.acceptUnsigned);
    if (verdict.ok) return undefined;
    this.metrics.signatureRefused(verdict.reason);
    this.logOnce(verdict.reason, verdict.keyId, verdict.detail);
    return `signature ${verdict.reason}: ${verdict.detail}`;
  }

  private logOnce(reason: SignatureRefusal, keyId: string | undefined, detail: string): void {
    const cause = reason === 'unknown_key' ? `${reason}\u0000${keyId ?? ''}` : reason;
    if (this.logged.has(cause) || this.logged.size >= MAX_LOGGED_CAUSES) return;
    this.logged.add(cause);
    this.log.error(
      { queue: this.queue, reason, keyId, detail },
      'message refused: its signature does not verify (dead-lettered; logged once per cause, counted in outbox_consumer_signature_refusals_total)',
    );
  }
}

/** Where the delivery was first published to (see DeliveryVerifier). */
function routeOf(msg: ConsumeMessage, queue: string): { exchange: string; routingKey: string } {
  if (msg.fields.exchange === '' && msg.fields.routingKey === queue) {
    const exchange = headerText(msg, HEADER.exchange);
    const routingKey = headerText(msg, HEADER.routingKey);
    if (exchange !== undefined && routingKey !== undefined) return { exchange, routingKey };
  }
  return { exchange: msg.fields.exchange, routingKey: msg.fields.routingKey };
}
