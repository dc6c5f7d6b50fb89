/**
 * The consumer's metrics, registered in a prom-client `Registry` the service passes in.
 *
 * `outbox-relay/consumer` does not load prom-client (a service may have its own copy,
 * of another version, or none): the metrics here implement what a prom-client registry
 * reads of a metric — `name`, `help`, `type`, `aggregator`, `get()` and `reset()` — so
 * `registry.metrics()` prints them with the service's own. Several consumers sharing one
 * registry share the metrics, told apart by their `queue` label.
 */

import type { SignatureRefusal } from '../domain/signature-check';
import { errorMessage, OutboxError } from '../errors';

/** What the consumer needs of a prom-client `Registry` (any version since 13). */
export interface ConsumerMetricsRegistry {
  registerMetric(metric: { get(): Promise<unknown>; reset(): void }): void;
  getSingleMetric?(name: string): unknown;
}

type Labels = Readonly<Record<string, string>>;

interface MetricValue {
  readonly value: number;
  readonly labels: Record<string, string | number>;
  readonly metricName?: string;
}

/** Label values joined into a map key (label values of the consumer never hold a NUL). */
function keyOf(labels: Labels): string {
  return Object.keys(labels)
    .sort()
    .map((name) => `${name}\u0000${labels[name] as string}`)
    .join('\u0000');
}

abstract class ConsumerMetric {
  readonly aggregator = 'sum';
  abstract readonly type: 'counter' | 'gauge' | 'histogram';

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  protected abstract values(): MetricValue[];
  abstract reset(): void;

  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValue[] }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() });
  }
}

/** A metric of one number per label set: the counter's and the gauge's common part. */
abstract class SingleValueMetric extends ConsumerMetric {
  private readonly series = new Map<string, { labels: Labels; value: number }>();

  protected setValue(labels: Labels, value: number): void {
    this.series.set(keyOf(labels), { labels, value });
  }

  protected addValue(labels: Labels, by: number): void {
    const found = this.series.get(keyOf(labels));
    if (found) found.value += by;
    else this.setValue(labels, by);
  }

  protected values(): MetricValue[] {
    return [...this.series.values()].map(({ labels, value }) => ({ labels: { ...labels }, value }));
  }

  reset(): void {
    this.series.clear();
  }
}

class CounterMetric extends SingleValueMetric {
  readonly type = 'counter';

  inc(labels: Labels, by = 1): void {
    this.addValue(labels, by);
  }
}

class GaugeMetric extends SingleValueMetric {
  readonly type = 'gauge';

  set(labels: Labels, value: number): void {
    this.setValue(labels, value);
  }

  add(labels: Labels, by: number): void {
    this.addValue(labels, by);
  }
}

class HistogramMetric extends ConsumerMetric {
  readonly type = 'histogram';
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(
    name: string,
    help: string,
    private readonly buckets: readonly number[],
  ) {
    super(name, help);
  }

  observe(labels: Labels, value: number): void {
    const key = keyOf(labels);
    let found = this.series.get(key);
    if (!found) {
      found = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(key, found);
    }
    for (const [index, bound] of this.buckets.entries()) if (value <= bound) found.counts[index] = (found.counts[index] ?? 0) + 1;
    found.sum += value;
    found.count += 1;
  }

  protected values(): MetricValue[] {
    const values: MetricValue[] = [];
    for (const { labels, counts, sum, count } of this.series.values()) {
      for (const [index, bound] of this.buckets.entries()) {
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: bound }, value: counts[index] ?? 0 });
      }
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count });
      values.push({ metricName: `${this.name}_sum`, labels: { ...labels }, value: sum });
      values.push({ metricName: `${this.name}_count`, labels: { ...labels }, value: count });
    }
    return values;
  }

  reset(): void {
    this.series.clear();
  }
}

/** How a delivery ended: the `outcome` label of `outbox_consumer_messages_total`. */
export type MessageOutcome = 'handled' | 'duplicate' | 'retried' | 'dead_lettered' | 'rejected';

/** What brought consuming back: the `cause` label of `outbox_consumer_reconnects_total`. */
export type ReconnectCause = 'connection' | 'cancel';

const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The metrics of one consumer (label `queue`); without a registry, counting goes nowhere. */
export class ConsumerMetrics {
  private readonly messages: CounterMetric;
  private readonly duration: HistogramMetric;
  private readonly reconnects: CounterMetric;
  private readonly consuming: GaugeMetric;
  private readonly inFlight: GaugeMetric;
  private readonly signatureRefusals: CounterMetric;
  private readonly labels: Labels;

  constructor(registry: ConsumerMetricsRegistry | undefined, queue: string) {
    this.labels = { queue };
    this.messages = shared(
      registry,
      CounterMetric,
      new CounterMetric(
        'outbox_consumer_messages_total',
        'Deliveries settled by the idempotent consumer, by outcome: handled, duplicate (skipped), retried, dead_lettered, rejected (refused before the handler: no message-id, or one the inbox cannot store)',
      ),
    );
    this.duration = shared(
      registry,
      HistogramMetric,
      new HistogramMetric(
        'outbox_consumer_handler_duration_seconds',
        "One attempt's transaction: inbox insert, handler and commit (outcome handled, duplicate or failed)",
        DURATION_BUCKETS,
      ),
    );
    this.reconnects = shared(
      registry,
      CounterMetric,
      new CounterMetric(
        'outbox_consumer_reconnects_total',
        'Times consuming resumed after a lost connection (cause connection) or a cancel by the broker (cause cancel)',
      ),
    );
    this.consuming = shared(
      registry,
      GaugeMetric,
      new GaugeMetric('outbox_consumer_consuming', '1 while the consumer consumes its queue, 0 otherwise'),
    );
    this.inFlight = shared(registry, GaugeMetric, new GaugeMetric('outbox_consumer_in_flight_messages', 'Deliveries being processed'));
    this.signatureRefusals = shared(
      registry,
      CounterMetric,
      new CounterMetric(
        'outbox_consumer_signature_refusals_total',
        'Deliveries refused by the verify option before the inbox, by reason: missing, malformed, unknown_key, bad_signature',
      ),
    );
    this.consuming.set(this.labels, 0);
    this.inFlight.set(this.labels, 0);
  }

  settled(outcome: MessageOutcome): void {
    this.messages.inc({ ...this.labels, outcome });
  }

  attempt(outcome: 'handled' | 'duplicate' | 'failed', seconds: number): void {
    this.duration.observe({ ...this.labels, outcome }, seconds);
  }

  signatureRefused(reason: SignatureRefusal): void {
    this.signatureRefusals.inc({ ...this.labels, reason });
  }

  reconnected(cause: ReconnectCause): void {
    this.reconnects.inc({ ...this.labels, cause });
  }

  setConsuming(consuming: boolean): void {
    this.consuming.set(this.labels, consuming ? 1 : 0);
  }

  addInFlight(by: number): void {
    this.inFlight.add(this.labels, by);
  }
}

/** The metric already in `registry` under this name (another consumer's), or `metric` registered. */
function shared<T extends ConsumerMetric>(
  registry: ConsumerMetricsRegistry | undefined,
  kind: abstract new (...args: never[]) => T,
  metric: T,
): T {
  if (!registry) return metric;
  const existing = registry.getSingleMetric?.(metric.name);
  if (existing instanceof kind) return existing;
  try {
    registry.registerMetric(metric);
  } catch (err: unknown) {
    throw new OutboxError('INVALID_ARGUMENT', `createConsumer: registry: ${errorMessage(err)}`, { cause: err });
  }
  return metric;
}
