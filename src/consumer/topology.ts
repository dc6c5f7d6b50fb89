import type { Channel } from 'amqplib';
import type { ConsumerSettings } from './settings';

type Topology = NonNullable<ConsumerSettings['topology']>;

/** The arguments of the retry queue: messages expire (per-message TTL) and go back to `queue`. */
export function retryQueueArguments(queue: string, queueType: 'classic' | 'quorum'): Record<string, unknown> {
  return {
    'x-dead-letter-exchange': '',
    'x-dead-letter-routing-key': queue,
    // A quorum queue dead-letters at-least-once only with reject-publish overflow; a
    // classic queue's dead-lettering is at-most-once (a broker crash at that instant can lose it).
    ...(queueType === 'quorum'
      ? { 'x-queue-type': 'quorum', 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' }
      : {}),
  };
}

function typeArguments(queueType: 'classic' | 'quorum'): Record<string, unknown> {
  return queueType === 'quorum' ? { 'x-queue-type': 'quorum' } : {};
}

/**
 * Declares the topology (idempotent; run on every connection and after a cancel): the
 * exchange (when its type is given) or a check that it exists, the dead-letter exchange
 * (fanout) and queue, the retry queue, the queue with its dead-letter exchange (and, asked
 * for, `x-single-active-consumer`), and its bindings. A queue that exists with other arguments makes the broker close the channel
 * (406 PRECONDITION_FAILED): the consumer reports it and does not consume.
 */
export async function declareTopology(
  channel: Channel,
  queue: string,
  topology: Topology,
  retryQueue: string,
  deadLetterExchange: string,
): Promise<void> {
  if (topology.exchangeType) await channel.assertExchange(topology.exchange, topology.exchangeType, { durable: true });
  else await channel.checkExchange(topology.exchange);
  await channel.assertExchange(deadLetterExchange, 'fanout', { durable: true });
  await channel.assertQueue(topology.deadLetterQueue, { durable: true, arguments: typeArguments(topology.queueType) });
  await channel.bindQueue(topology.deadLetterQueue, deadLetterExchange, '');
  await channel.assertQueue(retryQueue, { durable: true, arguments: retryQueueArguments(queue, topology.queueType) });
  await channel.assertQueue(queue, {
    durable: true,
    arguments: {
      ...topology.queueArguments,
      ...typeArguments(topology.queueType),
      ...(topology.singleActiveConsumer ? { 'x-single-active-consumer': true } : {}),
      'x-dead-letter-exchange': deadLetterExchange,
    },
  });
  for (const key of topology.bindingKeys) await channel.bindQueue(queue, topology.exchange, key);
}
