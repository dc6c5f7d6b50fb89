import type { OutboxMessage } from '../domain/message';
import { invalidMessage, type PublishOutcome } from '../domain/outcome';
import { isClosedForWhatItReceived } from '../util/outage';
import { parseCloseReason } from './close-reason';

/** How many suspects are remembered (the oldest are forgotten first). */
const MAX_SUSPECTS = 10_000;

/**
 * Messages in flight when the broker closed the channel or the connection with a reason
 * that names no message (a frame too large for the negotiated frame size, access
 * refused, …). A plain network loss or a broker shutdown (CONNECTION_FORCED) makes no
 * suspects. A suspect is sent alone, after the rest of its batch: if the broker closes
 * again while it is the only message in flight, the close is that message's failure,
 * not an outage; if it is confirmed, it is cleared. Kept across reconnects.
 */
export class Suspects {
  private readonly byMessageId = new Set<string>();

  has(message: OutboxMessage): boolean {
    return this.byMessageId.has(message.messageId);
  }

  /**
   * Reads what became of a publish that ended with the broker's `closeReason` (undefined:
   * no server close); returns the outcomes, the close turned into a failure for a
   * suspect that was alone in flight.
   */
  judge(messages: readonly OutboxMessage[], outcomes: PublishOutcome[], closeReason: string | undefined): PublishOutcome[] {
    messages.forEach((message, index) => {
      if (outcomes[index]?.kind === 'confirmed' || outcomes[index]?.kind === 'returned') this.byMessageId.delete(message.messageId);
    });
    // A close that names its message (no exchange, too large) was already judged by the publisher.
    if (closeReason === undefined || !isClosedForWhatItReceived(closeReason) || parseCloseReason(closeReason).kind !== 'other')
      return outcomes;
    const unconfirmed = messages.filter((_, index) => outcomes[index]?.kind === 'unconfirmed');
    const only = messages.length === 1 ? messages[0] : undefined;
    if (only && unconfirmed.length === 1 && this.has(only)) {
      // Still a suspect: its next attempt goes out alone too.
      return [{ kind: 'failed', ...invalidMessage(`the broker closed the connection each time this message was sent (${closeReason})`) }];
    }
    for (const message of unconfirmed) this.add(message.messageId);
    return outcomes;
  }

  private add(messageId: string): void {
    this.byMessageId.delete(messageId);
    this.byMessageId.add(messageId);
    if (this.byMessageId.size > MAX_SUSPECTS) {
      const oldest = this.byMessageId.values().next().value;
      if (oldest !== undefined) this.byMessageId.delete(oldest);
    }
  }
}
