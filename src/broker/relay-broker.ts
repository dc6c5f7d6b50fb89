import type { OutboxMessage } from '../domain/message';
import { invalidMessage, type Preflight, type PublishOutcome } from '../domain/outcome';
import { errorMessage } from '../errors';
import { messageProblem } from './amqp-limits';
import { parseCloseReason } from './close-reason';
import type { BrokerConnection } from './connection';
import type { PublishChannel } from './publish-channel';
import { publishBatch, type PublishOptions } from './publisher';
import type { PublishIdentity } from './signer';
import { Suspects } from './suspects';
import { SharedExclusive } from '../util/exclusive';
import { CachedTopology, TopologyProbe, type TargetKind, type TargetProblem } from './topology';

/** The part of the broker connection the adapter uses. */
export type RelayConnection = Pick<
  BrokerConnection,
  'connected' | 'blocked' | 'blockedAtAnyTimeSince' | 'waitUntilConnected' | 'onConnected' | 'channel' | 'openChannel' | 'lastCloseReason'
>;

/** How the relay publishes a batch (the relay's `PublishBatchOptions`). */
type RelayPublishOptions = Pick<PublishOptions, 'timeoutMs' | 'signal' | 'onSettled' | 'onWritten'> & { readonly signal: AbortSignal };

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
  /** Messages in flight when the broker refused something without naming it (broker/suspects.ts). */
  private readonly suspects = new Suspects();
  private readonly inFlight = new SharedExclusive();
  private readonly topology: CachedTopology;
  /** The app id, and the signer and user-id when configured. */
  private readonly identity: PublishIdentity;

  constructor(
    private readonly connection: RelayConnection,
    identity: string | PublishIdentity,
    topologyCacheMs = TOPOLOGY_CACHE_MS,
  ) {
    this.identity = typeof identity === 'string' ? { appId: identity } : identity;
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
   * What is known against each message before it is sent:
   * - a value amqplib would refuse (`messageProblem`: a field over AMQP's byte limits,
   *   headers it cannot encode exactly) fails it as `invalid_message`, and its exchange
   *   or queue is never checked (amqplib would throw on such a name);
   * - a missing exchange or command queue (checked by passive declare, cached) fails it
   *   before it is sent: the channel stays open for the rest of the batch. A check that
   *   fails for one name fails only that name's messages; while the connection is gone
   *   it throws (the whole batch waits, no attempt is counted).
   */
  async preflight(messages: readonly OutboxMessage[]): Promise<Preflight[]> {
    const problems = messages.map((m) => messageProblem(m, this.identity.appId));
    const valid = messages.filter((_, i) => problems[i] === undefined);
    const exchanges = await this.targetProblems(
      'exchange',
      valid.map((m) => m.exchange),
    );
    const queues = await this.targetProblems(
      'queue',
      valid.filter((m) => m.exchange === '').map((m) => m.routingKey),
    );
    return messages.map((message, index): Preflight => {
      const problem = problems[index];
      if (problem !== undefined) return { kind: 'fail', ...invalidMessage(problem) };
      const exchange = exchanges.get(message.exchange);
      if (exchange?.kind === 'missing') {
        return { kind: 'fail', reason: 'unknown_exchange', error: `exchange "${message.exchange}" does not exist` };
      }
      if (exchange?.kind === 'error') {
        return {
          kind: 'fail',
          reason: 'unknown_exchange',
          error: `cannot check exchange "${message.exchange}": ${errorMessage(exchange.error)}`,
        };
      }
      const queue = message.exchange === '' ? queues.get(message.routingKey) : undefined;
      if (queue?.kind === 'missing') {
        return { kind: 'fail', reason: 'unroutable', error: `no queue named "${message.routingKey}" for this command (default exchange)` };
      }
      if (queue?.kind === 'error') {
        return {
          kind: 'fail',
          reason: 'unroutable',
          error: `cannot check queue "${message.routingKey}" for this command: ${errorMessage(queue.error)}`,
        };
      }
      if (this.maxMessageBytes !== undefined && message.content.length > this.maxMessageBytes) return { kind: 'apart' };
      if (this.suspects.has(message)) return { kind: 'apart' };
      return { kind: 'send' };
    });
  }

  /** The topology's problems with `names`; a check that failed because the connection is gone throws. */
  private async targetProblems(kind: TargetKind, names: readonly string[]): Promise<Map<string, TargetProblem>> {
    const problems = await this.topology.problems(kind, names);
    if (!this.connection.connected) {
      for (const problem of problems.values()) if (problem.kind === 'error') throw problem.error;
    }
    return problems;
  }

  /**
   * Publishes pipelined with confirms. A suspect goes out alone on the connection (no
   * other publish in flight, from any worker), so a close that follows it is its own.
   */
  async publish(messages: readonly OutboxMessage[], options: RelayPublishOptions): Promise<PublishOutcome[]> {
    const alone = messages.length === 1 && this.suspects.has(messages[0] as OutboxMessage);
    return this.inFlight.run(alone, () => this.publishNow(messages, options));
  }

  private async publishNow(messages: readonly OutboxMessage[], options: RelayPublishOptions): Promise<PublishOutcome[]> {
    const channel = await this.connection.channel();
    const outcomes = await publishBatch(channel, messages, { ...this.identity, ...options });
    this.learnFromClose(channel);
    // A close the server gave a reason for: the channel's own, or the connection's when it is gone.
    const closeReason = channel.closeReason ?? (this.connection.connected ? undefined : this.connection.lastCloseReason);
    const judged = this.suspects.judge(messages, outcomes, channel.closed ? closeReason : undefined);
    // A channel opened while a quorum queue elected a new leader can nack everything for
    // that queue from then on (RabbitMQ 3.10, measured after a node loss on a test
    // cluster: a new channel on the same node was confirmed at once). A publish the broker
    // nacked whole replaces its channel; the nacks themselves hold their destinations.
    if (judged.length > 0 && judged.every((o) => o.kind === 'refused')) channel.discard();
    return judged;
  }

  private learnFromClose(channel: PublishChannel): void {
    if (!channel.closeReason) return;
    const reason = parseCloseReason(channel.closeReason);
    if (reason.kind === 'too_large') this.maxMessageBytes = reason.maxBytes;
    if (reason.kind === 'no_exchange') this.topology.forget();
  }
}
