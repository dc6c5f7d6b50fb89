import type { KeyObject } from 'node:crypto';
import type { ConsumeMessage } from 'amqplib';
import type { Pool, PoolClient } from 'pg';
import type { ConsumerMetricsRegistry } from './metrics';

/**
 * An OpenTelemetry `TracerProvider`, as far as the consumer uses one. Declared here so
 * that the consumer's types do not need `@opentelemetry/api` installed; any provider
 * (`NodeTracerProvider`, the NodeSDK's, `trace.getTracerProvider()`) is one.
 */
export interface ConsumerTracerProvider {
  getTracer(name: string, version?: string): object;
}

/** The `tracing` option: `true` for the global tracer provider, or a provider of the service's. */
export type ConsumerTracingOption = boolean | ConsumerTracerProvider;

/** What a handler receives: the delivery, decoded. */
export interface InboxMessage<TPayload = unknown> {
  /** AMQP `message-id`: the idempotency key. */
  readonly messageId: string;
  /** AMQP `type`, e.g. `order.created`. */
  readonly type: string | undefined;
  /** The body parsed as JSON when the content type is JSON; otherwise the raw bytes. */
  readonly payload: TPayload;
  readonly headers: Readonly<Record<string, unknown>>;
  readonly correlationId: string | undefined;
  /** The routing key the message was first published with (a retried copy keeps it). */
  readonly routingKey: string;
  /** The exchange the message was first published to (a retried copy keeps it). */
  readonly exchange: string;
  /** 1 on the first attempt, 2 on the first retry, … */
  readonly attempt: number;
  /** The row's `partition_key` (the relay's `x-outbox-partition-key` header); undefined for a message without a key. */
  readonly partitionKey: string | undefined;
  /**
   * The message's place in the outbox's order (the relay's `x-outbox-position` header, the
   * row's id; exact up to 2^53); undefined when the message does not carry it.
   */
  readonly position: number | undefined;
  /** The raw amqplib delivery. */
  readonly raw: ConsumeMessage;
}

/**
 * Processes one message inside `tx`, the consumer's open database transaction. Throw
 * to roll it back; the message is retried, then dead-lettered.
 */
export type MessageHandler<TPayload = unknown> = (message: InboxMessage<TPayload>, tx: PoolClient) => Promise<void>;

/** Logging hooks, pino-compatible (`(obj, msg)`); pass a pino logger or leave out. */
export interface ConsumerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

/**
 * Where the consumer is:
 * - `connecting`: before the first connection;
 * - `consuming`: connected, the queue consumed;
 * - `reconnecting`: after a connection loss or a cancel by the broker, until consuming again;
 * - `stopping`: `stop()` was called, in-flight messages drain;
 * - `stopped`: for good.
 */
export type ConsumerState = 'connecting' | 'consuming' | 'reconnecting' | 'stopping' | 'stopped';

/** One change of state, as `onStateChange` and the `state` event see it. */
export interface StateChange {
  readonly state: ConsumerState;
  readonly previous: ConsumerState;
  /** Why (the lost connection's error, "cancelled by the broker", …); never a password. */
  readonly reason?: string;
  /** The broker consumed from, on `consuming` (credentials masked). */
  readonly broker?: string;
  /** On `consuming` after `reconnecting`: how long consuming was interrupted (ms). */
  readonly outageMs?: number;
}

/**
 * The topology the consumer declares (all durable) and declares again on every
 * connection: the queue bound to `exchange` with each of `bindingKeys`, with a
 * dead-letter exchange (fanout) and queue, and the retry queue, whose expired messages
 * the broker dead-letters back to the queue.
 */
export interface ConsumerTopology {
  /** The exchange the queue is bound to. */
  readonly exchange: string;
  /** When given, the exchange is declared with this type (durable); otherwise it must exist. */
  readonly exchangeType?: 'topic' | 'direct' | 'fanout' | 'headers';
  /** At least one; `['#']` for everything of a topic exchange, `['']` for a fanout. */
  readonly bindingKeys: readonly string[];
  /** `quorum` for replicated queues (RabbitMQ ≥ 3.10). Default `classic`. */
  readonly queueType?: 'classic' | 'quorum';
  /** Default `<queue>.dead`. */
  readonly deadLetterQueue?: string;
  /** More arguments of the queue (e.g. `{ 'x-max-length': 100000 }`). */
  readonly queueArguments?: Readonly<Record<string, unknown>>;
  /**
   * Declares the queue with `x-single-active-consumer`: of all the consumers of the queue
   * (every instance of the service) the broker delivers to one at a time; the others are
   * standbys, and when the active one's connection ends the next takes over, its
   * unacknowledged messages delivered first. With `ordered: true`, a key's order holds
   * across instances. Default false. (A queue that exists without it must be deleted or
   * given a new name: the broker does not change a queue's arguments.)
   */
  readonly singleActiveConsumer?: boolean;
}

/**
 * The `verify` option (docs/signing.md): the relay's Ed25519 public keys by key id. A
 * delivery whose `x-outbox-signature` is missing, malformed, of an unknown key id or
 * wrong never reaches the inbox or the handler: it is dead-lettered (or rejected) with
 * the reason in `x-outbox-consumer-error`, counted in
 * `outbox_consumer_signature_refusals_total{reason}` and logged once per cause.
 */
export interface ConsumerVerifyOption {
  /** Key id → public key (PEM text, or a `KeyObject`). Several during a key rotation. */
  readonly keys: Readonly<Record<string, string | Buffer | KeyObject>>;
  /** `reject` (default): a message without a signature is refused; `accept`: it is handled (while a system migrates). */
  readonly unsigned?: 'reject' | 'accept';
}

export interface ConsumerOptions<TPayload = unknown> {
  /** RabbitMQ URL, or several (an array or a comma-separated list) tried in turn. */
  readonly amqpUrl: string | readonly string[];
  /** Queue to consume. Without `topology` it must exist. */
  readonly queue: string;
  /** The consuming service's database, holding the inbox table (`outbox-relay migrate --inbox`). */
  readonly pool: Pool;
  /** Name recorded with each processed message id, and in the connection name. Default: the queue name. */
  readonly name?: string;
  /** Schema of the inbox table. Default `outbox`. */
  readonly schema?: string;
  /**
   * Unacknowledged messages in flight. They are processed in batches on at most the pool's
   * size of connections at once. Default 10.
   */
  readonly prefetch?: number;
  /**
   * At most this many deliveries share one database transaction (each handler in its own
   * savepoint, one commit, then the acks). A batch takes the deliveries waiting when a
   * connection is free; 1 is a transaction per message. From 1 to 64 (a savepoint that
   * writes is a subtransaction, and PostgreSQL caches 64 per transaction). Default 50.
   */
  readonly batchSize?: number;
  /**
   * How long a batch that is not full may wait for more deliveries (ms), and only while
   * another batch is running and the prefetch window is not full: an idle consumer, and
   * one at prefetch 1, never wait. Default 0.
   */
  readonly batchWaitMs?: number;
  /**
   * Per-key order: messages of one `partition_key` (the relay's `x-outbox-partition-key`
   * header) are processed one after another in delivery order, different keys
   * concurrently; messages without a key are not held. A failing keyed message is retried
   * in place (the next ones of its key wait behind it); once dead-lettered, its key moves
   * on to the next message. Default false.
   */
  readonly ordered?: boolean;
  readonly handler: MessageHandler<TPayload>;
  /** Declares the queue, its bindings, dead-letter exchange and queue, and the retry queue. Default: none. */
  readonly topology?: ConsumerTopology;
  /** Retries after the first failure before the message is dead-lettered. Default 3. */
  readonly maxRetries?: number;
  /** Delay before the first retry (ms), doubling per retry. Default 200. */
  readonly retryDelayMs?: number;
  /** Longest retry delay (ms). Default 60000. */
  readonly retryMaxDelayMs?: number;
  /**
   * `delay-queue` (default): a failed message is republished to the retry queue (with
   * confirms) and acknowledged, so it leaves the prefetch window while it waits.
   * `in-place`: the delivery is held and run again after the delay.
   */
  readonly retryMode?: 'delay-queue' | 'in-place';
  /** The retry queue; declared by the consumer when first needed. Default `<queue>.retry`. */
  readonly retryQueue?: string;
  /**
   * Where a message goes after `maxRetries` (published with confirms, with the error and
   * attempt headers, under its original routing key). Default with `topology`:
   * `<queue>.dead`; without: none, the message is rejected and the queue's own
   * dead-letter exchange, if it has one, receives it.
   */
  readonly deadLetterExchange?: string;
  /** How long processed message ids are remembered (ms). Default 7 days. */
  readonly inboxRetentionMs?: number;
  /** How often old inbox rows are deleted (ms). Default 1 hour. */
  readonly inboxCleanupIntervalMs?: number;
  /** AMQP heartbeat (s): a silent connection is given up after about twice this. Default 10. */
  readonly heartbeatSeconds?: number;
  /** Timeout of one connection attempt (ms). Default 10000. */
  readonly connectTimeoutMs?: number;
  /** First reconnect delay (ms), doubling per failed attempt, with jitter. Default 250. */
  readonly reconnectBaseMs?: number;
  /** Longest reconnect delay (ms). Default 15000. */
  readonly reconnectMaxMs?: number;
  /**
   * How long `createConsumer` keeps trying to connect before it rejects (ms); `Infinity`
   * waits for the broker however long it takes. Refusals (bad credentials, a queue that
   * does not exist, a topology that disagrees with the broker's) reject at once. Default 30000.
   */
  readonly startTimeoutMs?: number;
  /** How long `stop()` waits for in-flight handlers before it rolls them back (ms). Default 10000. */
  readonly shutdownTimeoutMs?: number;
  /** prom-client registry to register the consumer's metrics in. Default: none. */
  readonly registry?: ConsumerMetricsRegistry;
  readonly log?: ConsumerLogger;
  /** Called on every change of state (also emitted as the consumer's `state` event). */
  readonly onStateChange?: (change: StateChange) => void;
  /**
   * OpenTelemetry: each attempt runs in a CONSUMER span `process <queue>`, a child of the
   * message's `traceparent`/`tracestate` (the relay's publish span), with the inbox insert,
   * the handler and the commit inside it. `true` uses the global tracer provider (what the
   * service's NodeSDK registered); a `TracerProvider` uses that one. Needs
   * `@opentelemetry/api` installed (an optional peer dependency). Default: no spans.
   */
  readonly tracing?: ConsumerTracingOption;
  /** Verify the relay's signatures; see `ConsumerVerifyOption`. Default: no check. */
  readonly verify?: ConsumerVerifyOption;
}
