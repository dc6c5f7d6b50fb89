import type { OutboxMessage } from '../domain/message';
import type { Preflight, PublishOutcome } from '../domain/outcome';
import { parseCloseReason } from './close-reason';
import type { BrokerConnection } from './connection';
import type { PublishChannel } from './publish-channel';
import { publishBatch } from './publisher';
import { CachedTopology, TopologyProbe } from './topology';

/** The part of the broker connection the adapter uses. */
export type RelayConnection = Pick<
  BrokerConnection,
  'connected' | 'blocked' | 'blockedAtAnyTimeSince' | 'waitUntilConnected' | 'onConnected' | 'channel' | 'openChannel'
>;

/** How long a positive exchange or queue check stays cached (ms). */
const TOPOLOGY_CACHE_MS = 30_000;

/**
 * The broker as the relay publishes to it: checks before sending, pipelined publishing
 * with confirms, and what the broker taught on the way. Facts learned from a close
 * (a size limit, a missing exchange) belong to the connection they were learned on:
 * a new connection forgets them.
 *
 * A learned size limit never fails a message by itself: a message over it is sent
 * apart, after the others, so the broker stays the judge — an operator who raised the
 * limit and ran `dead retry` sees the message delivered without restarting the relay.
 */
export class RelayBroker {
  private maxMessageBytes: number | undefined;
  private readonly topology: CachedTopology;

  constructor(
    private readonly connection: RelayConnection,
    private readonly appId: string,
    topologyCacheMs = TOPOLOGY_CACHE_MS,
  ) {
    this.topology = new CachedTopology(new TopologyProbe(() => connection.openChannel()), topologyCacheMs);
    connection.onConnected(() => {
      this.maxMessageBytes = undefined;
      this.topology.forget();
    });
  }

  get connected(): boolean {
    return this.connection.connected;
  }

  get blocked(): boolean {
    return this.connection.blocked;
  }

  blockedAtAnyTimeSince(epochMs: number): boolean {
    return this.connection.blockedAtAnyTimeSince(epochMs);
  }

  waitUntilConnected(signal: AbortSignal, maxWaitMs: number): Promise<void> {
    return this.connection.waitUntilConnected(signal, maxWaitMs);
  }

  /**
   * A missing exchange or command queue (checked by passive declare, cached) fails the
   * message before it is sent: the channel stays open for the rest of the batch.
   */
  async preflight(messages: readonly OutboxMessage[]): Promise<Preflight[]> {
    const missingExchanges = await this.topology.missing(
      'exchange',
      messages.map((m) => m.exchange),
    );
    const missingQueues = await this.topology.missing(
      'queue',
      messages.filter((m) => m.exchange === '').map((m) => m.routingKey),
    );
    return messages.map((message): Preflight => {
      if (missingExchanges.has(message.exchange)) {
        return { kind: 'fail', reason: 'unknown_exchange', error: `exchange "${message.exchange}" does not exist` };
      }
      if (message.exchange === '' && missingQueues.has(message.routingKey)) {
        return { kind: 'fail', reason: 'unroutable', error: `no queue named "${message.routingKey}" for this command (default exchange)` };
      }
      if (this.maxMessageBytes !== undefined && message.content.length > this.maxMessageBytes) return { kind: 'apart' };
      return { kind: 'send' };
    });
  }

  async publish(messages: readonly OutboxMessage[], options: { timeoutMs: number; signal: AbortSignal }): Promise<PublishOutcome[]> {
    const channel = await this.connection.channel();
    const outcomes = await publishBatch(channel, messages, { appId: this.appId, ...options });
    this.learnFromClose(channel);
    return outcomes;
  }

  private learnFromClose(channel: PublishChannel): void {
    if (!channel.closeReason) return;
    const reason = parseCloseReason(channel.closeReason);
    if (reason.kind === 'too_large') this.maxMessageBytes = reason.maxBytes;
    if (reason.kind === 'no_exchange') this.topology.forget();
  }
}
