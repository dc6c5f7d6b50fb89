import { EventEmitter } from 'node:events';
import type { ConfirmChannel, Options } from 'amqplib';
import { PublishChannel } from '../../src/broker/publish-channel';

type ConfirmCallback = (err: unknown) => void;

interface Published {
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  readonly options: Options.Publish;
  readonly callback: ConfirmCallback;
  settled: boolean;
}

/**
 * A confirm channel as far as publishBatch and PublishChannel use it. Like amqplib's,
 * its own 'close' listener (registered first) fails every unconfirmed callback with
 * "channel closed", after the 'error' event that carried the server's reason.
 */
export class FakeConfirmChannel extends EventEmitter {
  readonly published: Published[] = [];
  /** What publish() returns (false = the socket buffer is full: wait for 'drain'). */
  writable = true;
  closeCalls = 0;
  /** Makes publish() throw for the message with this id, as amqplib does for an unencodable one. */
  refuse: string | undefined;

  constructor() {
    super();
    this.on('close', () => {
      for (const p of this.published) this.settle(p, new Error('channel closed'));
    });
  }

  publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish, callback: ConfirmCallback): boolean {
    if (options.messageId !== undefined && options.messageId === this.refuse) throw new RangeError('Frame size exceeds frame max');
    this.published.push({ exchange, routingKey, content, options, callback, settled: false });
    return this.writable;
  }

  close(): Promise<void> {
    this.closeCalls += 1;
    this.emit('close');
    return Promise.resolve();
  }

  ack(index: number): void {
    this.settle(this.at(index), null);
  }

  nack(index: number): void {
    this.settle(this.at(index), new Error('message nacked'));
  }

  /** basic.return of a published message (always before its confirm). */
  returnMessage(index: number, replyText = 'NO_ROUTE'): void {
    const p = this.at(index);
    this.emit('return', {
      content: p.content,
      fields: { replyCode: 312, replyText, exchange: p.exchange, routingKey: p.routingKey },
      properties: { messageId: p.options.messageId, headers: {} },
    });
  }

  /** The server closes the channel, with a reason (channel.close) or without (connection lost). */
  serverClose(reason?: string): void {
    if (reason !== undefined) this.emit('error', new Error(reason));
    this.emit('close');
  }

  private at(index: number): Published {
    const p = this.published[index];
    if (!p) throw new Error(`message #${index} was not published`);
    return p;
  }

  private settle(p: Published, err: Error | null): void {
    if (p.settled) return;
    p.settled = true;
    p.callback(err);
  }
}

export function fakeChannel(): { fake: FakeConfirmChannel; target: PublishChannel } {
  const fake = new FakeConfirmChannel();
  return { fake, target: new PublishChannel(fake as unknown as ConfirmChannel) };
}
