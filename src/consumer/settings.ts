import type { Pool } from 'pg';
import { OutboxError } from '../errors';
import type { ConsumerMetricsRegistry } from './metrics';
import { databaseTextProblem, MAX_IDENTIFIER_BYTES, unknownOptions } from './option-checks';
import type { ConsumerLogger, ConsumerOptions, ConsumerTopology, ConsumerTracingOption, MessageHandler, StateChange } from './options';
import { DeliveryTracing } from './tracing';
import { verifySettings, type VerifySettings } from './verify';

/** The options with every default applied, validated and frozen. */
export interface ConsumerSettings<TPayload = unknown> {
  readonly urls: readonly string[];
  readonly queue: string;
  readonly pool: Pool;
  readonly name: string;
  readonly schema: string;
  readonly prefetch: number;
  readonly batchSize: number;
  readonly batchWaitMs: number;
  readonly ordered: boolean;
  /** Batches (each on its own pool connection) running at once: the pool's size. */
  readonly concurrency: number;
  readonly handler: MessageHandler<TPayload>;
  readonly topology:
    | (Required<Omit<ConsumerTopology, 'exchangeType'>> & Pick<ConsumerTopology, 'exchangeType'> & { queueType: 'classic' | 'quorum' })
    | undefined;
  readonly maxRetries: number;
  readonly retryDelayMs: number;
  readonly retryMaxDelayMs: number;
  readonly retryMode: 'delay-queue' | 'in-place';
  readonly retryQueue: string;
  readonly deadLetterExchange: string | undefined;
  readonly inboxRetentionMs: number;
  readonly inboxCleanupIntervalMs: number;
  readonly heartbeatSeconds: number;
  readonly connectTimeoutMs: number;
  readonly reconnectBaseMs: number;
  readonly reconnectMaxMs: number;
  readonly startTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  readonly registry: ConsumerMetricsRegistry | undefined;
  readonly log: Required<ConsumerLogger>;
  readonly onStateChange: ((change: StateChange) => void) | undefined;
  /** The spans of each attempt; undefined without the `tracing` option. */
  readonly tracing: DeliveryTracing | undefined;
  /** The signature check; undefined without the `verify` option. */
  readonly verify: VerifySettings | undefined;
}

const noop = (): void => undefined;

/** RabbitMQ's limit on queue and exchange names (bytes). */
const MAX_NAME_BYTES = 255;

/** A savepoint that writes is a subtransaction; PostgreSQL caches 64 per transaction, more slow every snapshot. */
const MAX_BATCH_SIZE = 64;

/** The pool's `max` (pg's default 10): how many batches may run at once. */
function poolSize(pool: unknown): number {
  const max = (pool as { options?: { max?: unknown } } | undefined)?.options?.max;
  return typeof max === 'number' && Number.isInteger(max) && max > 0 ? max : 10;
}

/**
 * Checks `options` and applies the defaults. Every problem is collected and reported in
 * one `INVALID_ARGUMENT` error, on one line, naming each option.
 */
export function consumerSettings<TPayload>(options: ConsumerOptions<TPayload>): ConsumerSettings<TPayload> {
  const problems: string[] = [];
  const given = (options ?? {}) as Partial<ConsumerOptions<TPayload>> & Record<string, unknown>;
  problems.push(...unknownOptions(given, ''));

  const int = (key: keyof ConsumerOptions, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const value = given[key];
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      problems.push(`${key} must be an integer from ${min} to ${max === Number.MAX_SAFE_INTEGER ? 'any' : max} (got ${describe(value)})`);
      return fallback;
    }
    return value;
  };
  const ms = (key: keyof ConsumerOptions, fallback: number, allowInfinity = false): number => {
    const value = given[key];
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || Number.isNaN(value) || value < 0 || (!allowInfinity && !Number.isFinite(value))) {
      problems.push(`${key} must be a number of milliseconds ≥ 0${allowInfinity ? ' or Infinity' : ''} (got ${describe(value)})`);
      return fallback;
    }
    return value;
  };
  const name = (key: string, value: unknown, fallback: string, maxBytes = MAX_NAME_BYTES): string => {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || value === '' || Buffer.byteLength(value) > maxBytes) {
      problems.push(`${key} must be a non-empty string of at most ${maxBytes} bytes (got ${describe(value)})`);
      return fallback;
    }
    return value;
  };
  /** A name the database stores or uses: also text PostgreSQL takes. */
  const storedName = (key: string, value: unknown, fallback: string, maxBytes = MAX_NAME_BYTES): string => {
    const before = problems.length;
    const result = name(key, value, fallback, maxBytes);
    const problem = problems.length === before ? databaseTextProblem(result) : undefined;
    if (problem !== undefined) problems.push(`${key} ${problem}${value === undefined ? ' (it defaults to the queue name)' : ''}`);
    return result;
  };
  const flag = (key: keyof ConsumerOptions): boolean => {
    const value = given[key];
    if (value === undefined) return false;
    if (typeof value !== 'boolean') problems.push(`${key} must be true or false (got ${describe(value)})`);
    return value === true;
  };

  const urls = amqpUrls(given.amqpUrl, problems);
  const queue = name('queue', given.queue ?? '', 'queue');
  if (given.pool === undefined || typeof (given.pool as { connect?: unknown }).connect !== 'function') {
    problems.push('pool must be a pg Pool');
  }
  if (typeof given.handler !== 'function') problems.push('handler must be a function (message, tx) => Promise<void>');
  const retryMode = given.retryMode ?? 'delay-queue';
  if (retryMode !== 'delay-queue' && retryMode !== 'in-place')
    problems.push(`retryMode must be "delay-queue" or "in-place" (got ${describe(retryMode)})`);
  if (
    given.log !== undefined &&
    !['info', 'warn', 'error'].every((level) => typeof (given.log as unknown as Record<string, unknown>)[level] === 'function')
  ) {
    problems.push('log must have info, warn and error methods (a pino logger will do)');
  }
  if (given.registry !== undefined && typeof (given.registry as { registerMetric?: unknown }).registerMetric !== 'function') {
    problems.push('registry must be a prom-client Registry');
  }
  if (given.onStateChange !== undefined && typeof given.onStateChange !== 'function') problems.push('onStateChange must be a function');
  const topology = topologySettings(given.topology, queue, problems);
  const consumerName = storedName('name', given.name, queue);
  const tracing = tracingSettings(given.tracing, queue, consumerName, problems);

  const settings: ConsumerSettings<TPayload> = {
    urls,
    queue,
    pool: given.pool as Pool,
    name: consumerName,
    schema: storedName('schema', given.schema, 'outbox', MAX_IDENTIFIER_BYTES),
    prefetch: int('prefetch', 10, 1, 65_535),
    batchSize: int('batchSize', 50, 1, MAX_BATCH_SIZE),
    batchWaitMs: ms('batchWaitMs', 0),
    ordered: flag('ordered'),
    concurrency: poolSize(given.pool),
    handler: given.handler as MessageHandler<TPayload>,
    topology,
    maxRetries: int('maxRetries', 3, 0, 1_000),
    retryDelayMs: ms('retryDelayMs', 200),
    retryMaxDelayMs: ms('retryMaxDelayMs', 60_000),
    retryMode,
    retryQueue: name('retryQueue', given.retryQueue, `${queue}.retry`),
    deadLetterExchange: name('deadLetterExchange', given.deadLetterExchange, topology ? `${queue}.dead` : '') || undefined,
    inboxRetentionMs: ms('inboxRetentionMs', 7 * 86_400_000),
    inboxCleanupIntervalMs: int('inboxCleanupIntervalMs', 3_600_000, 1),
    heartbeatSeconds: int('heartbeatSeconds', 10, 0, 3_600),
    connectTimeoutMs: int('connectTimeoutMs', 10_000, 1),
    reconnectBaseMs: int('reconnectBaseMs', 250, 1),
    reconnectMaxMs: int('reconnectMaxMs', 15_000, 1),
    startTimeoutMs: ms('startTimeoutMs', 30_000, true),
    shutdownTimeoutMs: ms('shutdownTimeoutMs', 10_000),
    registry: given.registry,
    log: logger(given.log),
    onStateChange: given.onStateChange,
    tracing,
    verify: verifySettings(given.verify, problems),
  };
  if (problems.length > 0) throw new OutboxError('INVALID_ARGUMENT', `createConsumer: ${problems.join('; ')}`);
  return Object.freeze(settings);
}

function tracingSettings(value: unknown, queue: string, consumerName: string, problems: string[]): DeliveryTracing | undefined {
  if (value !== undefined && typeof value !== 'boolean' && typeof (value as { getTracer?: unknown } | null)?.getTracer !== 'function') {
    problems.push(`tracing must be true, false or an OpenTelemetry TracerProvider (got ${describe(value)})`);
    return undefined;
  }
  try {
    return DeliveryTracing.fromOption(value as ConsumerTracingOption | undefined, queue, consumerName);
  } catch (err: unknown) {
    problems.push(`tracing: ${(err as Error).message}`);
    return undefined;
  }
}

function amqpUrls(value: unknown, problems: string[]): string[] {
  const list = typeof value === 'string' ? value.split(/,(?=\s*amqps?:\/\/)/i) : Array.isArray(value) ? (value as unknown[]) : undefined;
  if (list === undefined || list.length === 0) {
    problems.push('amqpUrl must be an amqp:// or amqps:// URL, or a list of them');
    return [];
  }
  const urls: string[] = [];
  for (const [index, item] of list.entries()) {
    const url = typeof item === 'string' ? item.trim() : '';
    if (!/^amqps?:\/\/[^/]/i.test(url)) {
      problems.push(`amqpUrl${list.length > 1 ? `[${index}]` : ''} must be an amqp:// or amqps:// URL`);
      continue;
    }
    urls.push(url);
  }
  return urls;
}

function topologySettings(value: ConsumerTopology | undefined, queue: string, problems: string[]): ConsumerSettings['topology'] {
  if (value === undefined) return undefined;
  const before = problems.length;
  if (typeof value !== 'object' || value === null) {
    problems.push('topology must be an object');
    return undefined;
  }
  problems.push(...unknownOptions(value, 'topology.'));
  if (value.singleActiveConsumer !== undefined && typeof value.singleActiveConsumer !== 'boolean') {
    problems.push(`topology.singleActiveConsumer must be true or false (got ${describe(value.singleActiveConsumer)})`);
  }
  if (typeof value.exchange !== 'string') problems.push('topology.exchange must be a string (the exchange to bind to)');
  if (value.exchangeType !== undefined && !['topic', 'direct', 'fanout', 'headers'].includes(value.exchangeType)) {
    problems.push(`topology.exchangeType must be topic, direct, fanout or headers (got ${describe(value.exchangeType)})`);
  }
  if (!Array.isArray(value.bindingKeys) || value.bindingKeys.length === 0 || !value.bindingKeys.every((key) => typeof key === 'string')) {
    problems.push("topology.bindingKeys must be a non-empty list of strings (['#'] for everything)");
  }
  const queueType = value.queueType ?? 'classic';
  if (queueType !== 'classic' && queueType !== 'quorum')
    problems.push(`topology.queueType must be "classic" or "quorum" (got ${describe(queueType)})`);
  if (value.queueArguments !== undefined && (typeof value.queueArguments !== 'object' || value.queueArguments === null)) {
    problems.push('topology.queueArguments must be an object');
  }
  if (problems.length > before) return undefined;
  return Object.freeze({
    exchange: value.exchange,
    exchangeType: value.exchangeType,
    bindingKeys: Object.freeze([...value.bindingKeys]),
    queueType,
    deadLetterQueue: value.deadLetterQueue ?? `${queue}.dead`,
    queueArguments: Object.freeze({ ...(value.queueArguments ?? {}) }),
    singleActiveConsumer: value.singleActiveConsumer === true,
  });
}

function logger(log: ConsumerLogger | undefined): Required<ConsumerLogger> {
  if (!log) return { info: noop, warn: noop, error: noop, debug: noop };
  return {
    info: (obj, msg) => log.info(obj, msg),
    warn: (obj, msg) => log.warn(obj, msg),
    error: (obj, msg) => log.error(obj, msg),
    debug: (obj, msg) => log.debug?.(obj, msg),
  };
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  return typeof value;
}
