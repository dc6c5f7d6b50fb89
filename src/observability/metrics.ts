import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import { FAILURE_REASONS } from '../domain/outcome';

/** Every metric the "Metrics and health" table of docs/runbook.md lists, registered on a registry of its own (never the global one). */
export interface RelayMetrics {
  readonly registry: Registry;
  readonly lagSeconds: Gauge;
  readonly pendingMessages: Gauge<'state'>;
  readonly deadMessages: Gauge;
  readonly expiredMessages: Gauge;
  readonly publishedTotal: Counter;
  readonly publishFailuresTotal: Counter<'reason'>;
  /** Publishes the broker refused with a negative confirm (no attempt: their destination is held). */
  readonly refusedTotal: Counter;
  /** Destinations (exchange and routing key) the relay holds because the broker refuses their messages. */
  readonly heldDestinations: Gauge;
  readonly deadTotal: Counter;
  readonly expiredTotal: Counter;
  readonly unroutableTotal: Counter;
  readonly deliveryLatencySeconds: Histogram;
  readonly batchDurationSeconds: Histogram;
  readonly up: Gauge<'dependency'>;
  readonly blockedKeys: Gauge;
  readonly stalled: Gauge;
  readonly cleanupDeletedTotal: Counter;
  /** Failed refreshes of the table gauges, by part: `lag` (the lag probe) or `counts` (pending, dead, blocked keys). */
  readonly gaugeRefreshFailuresTotal: Counter<'part'>;
  /** When the table gauges of each part were last refreshed (Unix seconds). */
  readonly gaugeLastRefreshSeconds: Gauge<'part'>;
  /** 1 while this replica leads (publishes for the outbox), 0 while it stands by. */
  readonly leader: Gauge;
  /** Where messages spend their time between commit and mark (only with OUTBOX_STAGE_TIMINGS; otherwise never observed). */
  readonly stageSeconds: Histogram<'stage'>;
  /**
   * Shows or hides the gauges that describe the outbox table (lag, pending, dead,
   * expired, blocked keys, their refresh time): only the leading replica reads the table,
   * so only its scrape has them; a standby's would be stale. Shown by default.
   */
  showOutboxGauges(show: boolean): void;
}

/**
 * How often the event loop delay histogram (nodejs_eventloop_lag_*) is sampled (ms). Each
 * sample wakes the process: at prom-client's default (every 10 ms) the sampling alone
 * cost an idle relay 0.8 % of a core here, at 1 s still 0.17 % (node alone, measured).
 */
const EVENT_LOOP_SAMPLE_MS = 5_000;

export function createMetrics(options: { defaultMetrics?: boolean; stageTimings?: boolean } = {}): RelayMetrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  const registers = [registry];
  const metrics: RelayMetrics = {
    registry,
    lagSeconds: new Gauge({
      name: 'outbox_lag_seconds',
      help: 'Age of the oldest due, unpublished, non-dead message (seconds since it became due); 0 when none.',
      registers,
    }),
    pendingMessages: new Gauge({
      name: 'outbox_pending_messages',
      help: 'Unpublished, non-dead messages: state="due" may be published now, state="delayed" waits for available_at or a retry.',
      labelNames: ['state'],
      registers,
    }),
    deadMessages: new Gauge({ name: 'outbox_dead_messages', help: 'Dead messages waiting for an operator.', registers }),
    expiredMessages: new Gauge({ name: 'outbox_expired_messages', help: 'Expired messages still retained.', registers }),
    publishedTotal: new Counter({
      name: 'outbox_messages_published_total',
      help: 'Messages confirmed by the broker and marked published.',
      registers,
    }),
    publishFailuresTotal: new Counter({
      name: 'outbox_publish_failures_total',
      help: 'Publish attempts that did not end in a positive confirm, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    refusedTotal: new Counter({
      name: 'outbox_publishes_refused_total',
      help: 'Publishes the broker refused with a negative confirm (a queue full under x-overflow reject-publish, or without a leader): no attempt counted, their destination held.',
      registers,
    }),
    heldDestinations: new Gauge({
      name: 'outbox_held_destinations',
      help: 'Destinations (exchange and routing key) held because the broker refuses their messages: they wait, one probe at a time, until it takes them again.',
      registers,
    }),
    deadTotal: new Counter({ name: 'outbox_messages_dead_total', help: 'Messages that became dead.', registers }),
    expiredTotal: new Counter({
      name: 'outbox_messages_expired_total',
      help: 'Messages that reached their expires_at before they could be published (never sent).',
      registers,
    }),
    unroutableTotal: new Counter({
      name: 'outbox_messages_unroutable_total',
      help: 'Messages returned by the broker as unroutable (no queue bound).',
      registers,
    }),
    deliveryLatencySeconds: new Histogram({
      name: 'outbox_delivery_latency_seconds',
      help: 'From the later of available_at and creation to the broker confirm.',
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    batchDurationSeconds: new Histogram({
      name: 'outbox_batch_duration_seconds',
      help: 'Claim, publish and mark of one batch.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    up: new Gauge({
      name: 'outbox_up',
      help: 'Whether the relay is connected to a dependency (1) or not (0).',
      labelNames: ['dependency'],
      registers,
    }),
    blockedKeys: new Gauge({
      name: 'outbox_blocked_keys',
      help: 'Partition keys held by a dead message under OUTBOX_ORDERING_ON_DEAD=block.',
      registers,
    }),
    stalled: new Gauge({
      name: 'outbox_stalled',
      help: 'Whether the relay is stalled (1): due messages wait, database and broker are up, and nothing was published or failed within OUTBOX_STALL_TIMEOUT_MS.',
      registers,
    }),
    cleanupDeletedTotal: new Counter({
      name: 'outbox_cleanup_deleted_total',
      help: 'Published messages deleted by the retention cleanup.',
      registers,
    }),
    gaugeRefreshFailuresTotal: new Counter({
      name: 'outbox_gauge_refresh_failures_total',
      help: 'Failed refreshes of the table gauges: part="lag" (outbox_lag_seconds) or part="counts" (pending, dead, blocked keys), which then keep their last values.',
      labelNames: ['part'],
      registers,
    }),
    gaugeLastRefreshSeconds: new Gauge({
      name: 'outbox_gauge_last_refresh_timestamp_seconds',
      help: 'When the table gauges of part="lag" or part="counts" were last refreshed (Unix time; 0 before the first refresh).',
      labelNames: ['part'],
      registers,
    }),
    stageSeconds: new Histogram({
      name: 'outbox_stage_seconds',
      help: 'With OUTBOX_STAGE_TIMINGS=true: time per message in each stage between its commit and its mark (due_to_claimed, claimed_to_written, written_to_confirmed, confirmed_to_marked).',
      labelNames: ['stage'],
      buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1],
      registers: options.stageTimings ? registers : [],
    }),
    leader: new Gauge({
      name: 'outbox_leader',
      help: 'Whether this replica leads (1: it claims, publishes, refreshes the outbox gauges and runs the cleanup) or stands by (0).',
      registers,
    }),
    showOutboxGauges: (show) => {
      for (const metric of outboxGauges) {
        const name = (metric as unknown as { name: string }).name;
        const registered = registry.getSingleMetric(name) !== undefined;
        if (show && !registered) registry.registerMetric(metric);
        else if (!show && registered) registry.removeSingleMetric(name);
      }
    },
  };
  const outboxGauges: readonly Metric[] = [
    metrics.lagSeconds,
    metrics.pendingMessages,
    metrics.deadMessages,
    metrics.expiredMessages,
    metrics.blockedKeys,
    metrics.gaugeLastRefreshSeconds,
  ];
  // Every label value exists from the start, so rate() and alerts see zeros, not gaps.
  for (const reason of FAILURE_REASONS) metrics.publishFailuresTotal.inc({ reason }, 0);
  for (const state of ['due', 'delayed']) metrics.pendingMessages.set({ state }, 0);
  for (const dependency of ['database', 'broker']) metrics.up.set({ dependency }, 0);
  for (const part of ['lag', 'counts']) {
    metrics.gaugeRefreshFailuresTotal.inc({ part }, 0);
    metrics.gaugeLastRefreshSeconds.set({ part }, 0);
  }
  metrics.lagSeconds.set(0);
  metrics.leader.set(0);
  metrics.deadMessages.set(0);
  metrics.expiredMessages.set(0);
  metrics.blockedKeys.set(0);
  metrics.heldDestinations.set(0);
  metrics.stalled.set(0);
  return metrics;
}
