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
    return signatureHeader(this.keyId, sign(null, this.canonical(message, timestamp), this.key));
  }

  /**
   * The same, computed on libuv's thread pool (`crypto.sign` with a callback): the event
   * loop only builds the canonical form (~5 µs for 1 KiB) and the Ed25519 work (~50 µs)
   * runs beside it, on another core when one is free. Never rejects: a message that
   * cannot be signed resolves to its Error.
   */
  signAsync(message: OutboxMessage, timestamp: number): Promise<string | Error> {
    return new Promise((resolve) => {
      try {
        sign(null, this.canonical(message, timestamp), this.key, (err, signature) => {
          resolve(err ? err : signatureHeader(this.keyId, signature));
        });
      } catch (err: unknown) {
        resolve(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  private canonical(message: OutboxMessage, timestamp: number): Buffer {
    return canonicalBytes({
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
