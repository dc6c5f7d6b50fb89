import type { Failure } from '../domain/outcome';
import type { OutboxMessage } from '../domain/message';

/**
 * What a channel close said, read once from the server's text. RabbitMQ's close
 * reasons are English text, so this is the one place that knows their wording.
 */
export type CloseReason =
  | { readonly kind: 'no_exchange'; readonly exchange: string; readonly text: string }
  | { readonly kind: 'too_large'; readonly size: number; readonly maxBytes: number; readonly text: string }
  | { readonly kind: 'other'; readonly text: string };

// RabbitMQ prints the name verbatim (quotes inside it are not escaped), so match up to
// the final "' in vhost '".
const NO_EXCHANGE = /NOT_FOUND - no exchange '(.*)' in vhost '/;
const TOO_LARGE = /message size (\d+) is larger than configured max size (\d+)/;

export function parseCloseReason(text: string): CloseReason {
  const noExchange = NO_EXCHANGE.exec(text);
  if (noExchange) return { kind: 'no_exchange', exchange: noExchange[1] as string, text };
  const tooLarge = TOO_LARGE.exec(text);
  if (tooLarge) return { kind: 'too_large', size: Number(tooLarge[1]), maxBytes: Number(tooLarge[2]), text };
  return { kind: 'other', text };
}

/** The failure of a message over the broker's size limit. */
export function tooLargeFailure(message: OutboxMessage, maxBytes: number): Failure {
  return {
    reason: 'too_large',
    error: `message of ${message.content.length} bytes exceeds the broker's max message size of ${maxBytes} bytes`,
  };
}

/**
 * Which message a channel close blames. A channel closed because of one message
 * (missing exchange, message too large) fails only the messages it names; any other
 * close leaves the unconfirmed messages without a verdict.
 */
export function closeVerdict(closeReason: string | undefined, message: OutboxMessage): Failure | undefined {
  if (!closeReason) return undefined;
  const reason = parseCloseReason(closeReason);
  if (reason.kind === 'no_exchange' && reason.exchange === message.exchange) {
    return { reason: 'unknown_exchange', error: `exchange "${message.exchange}" does not exist` };
  }
  if (reason.kind === 'too_large' && message.content.length > reason.maxBytes) return tooLargeFailure(message, reason.maxBytes);
  return undefined;
}
