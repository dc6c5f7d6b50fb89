import { sign, type KeyObject } from 'node:crypto';
import type { Config } from '../config/load-config';
import type { OutboxMessage } from '../domain/message';
import { canonicalBytes, canonicalHeaders, signatureHeader } from '../domain/signature';

/**
 * Signs messages with the relay's Ed25519 key (OUTBOX_SIGNING_KEY_FILE, key id
 * OUTBOX_SIGNING_KEY_ID). The key is parsed once into a KeyObject at start; a signature
 * is one `crypto.sign` over the canonical form (domain/signature.ts), about 40-50 µs of
 * CPU for a 1 KiB message on the bench machine, most of it Ed25519 itself.
 */
export class MessageSigner {
  constructor(
    readonly keyId: string,
    private readonly key: KeyObject,
  ) {}

  /**
   * The `x-outbox-signature` value of `message` as the publisher sends it: `timestamp` is
   * the AMQP property's value, the body `message.content`, the headers the row's.
   */
  sign(message: OutboxMessage, timestamp: number): string {
    const data = canonicalBytes({
      keyId: this.keyId,
      messageId: message.messageId,
      type: message.messageType ?? undefined,
      timestamp,
      contentType: message.contentType,
      exchange: message.exchange,
      routingKey: message.routingKey,
      headersJson: canonicalHeaders(message.headers),
      body: message.content,
    });
    return signatureHeader(this.keyId, sign(null, data, this.key));
  }
}

/** Who the messages are from: the app id, and the signer and `user-id` when configured. */
export interface PublishIdentity {
  readonly appId: string;
  readonly signer?: MessageSigner;
  readonly userId?: string;
}

/** What the relay's publishes carry of the configuration: app id, signer, user-id. */
export function publishIdentity(config: Pick<Config, 'appId' | 'signing' | 'userId'>): PublishIdentity {
  return {
    appId: config.appId,
    signer: config.signing ? new MessageSigner(config.signing.keyId, config.signing.key) : undefined,
    userId: config.userId,
  };
}
