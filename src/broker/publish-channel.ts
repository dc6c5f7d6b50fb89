import type { ConfirmChannel, Message } from 'amqplib';
import { errorMessage } from '../errors';

/** What a returned (unroutable) message came back with. */
export interface ReturnInfo {
  readonly replyCode: number;
  readonly replyText: string;
}

/**
 * One confirm channel and what it has heard: returns (keyed by message id, as a
 * basic.return always precedes the confirm of the same message) and why it closed.
 */
export class PublishChannel {
  readonly returned = new Map<string, ReturnInfo>();
  closed = false;
  /** The server's reason when it closed the channel (e.g. 404 NOT_FOUND - no exchange 'x'). */
  closeReason: string | undefined;
  private readonly closeWaiters = new Set<() => void>();

  constructor(readonly channel: ConfirmChannel) {
    channel.on('return', (msg: Message) => {
      const id = msg.properties.messageId as unknown;
      if (typeof id === 'string') {
        const fields = msg.fields as unknown as { replyCode?: number; replyText?: string };
        this.returned.set(id, { replyCode: fields.replyCode ?? 312, replyText: fields.replyText ?? 'NO_ROUTE' });
      }
    });
    channel.on('error', (err: Error) => {
      this.closeReason = errorMessage(err);
    });
    channel.on('close', () => {
      this.closed = true;
      for (const wake of this.closeWaiters) wake();
      this.closeWaiters.clear();
    });
  }

  /** Calls `callback` when the channel closes (used to stop waiting for 'drain'). */
  onClose(callback: () => void): () => void {
    if (this.closed) {
      callback();
      return () => undefined;
    }
    this.closeWaiters.add(callback);
    return () => this.closeWaiters.delete(callback);
  }

  /** Closes the channel, e.g. after confirms timed out; late confirms are then ignored. */
  discard(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.close().catch(() => undefined);
  }
}
