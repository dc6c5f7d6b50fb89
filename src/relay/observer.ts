import type { OutboxMessage } from '../domain/message';
import type { Logger } from '../observability/logger';
import type { RelayMetrics } from '../observability/metrics';
import type { BatchReport } from './batch';
import type { HoldListener } from './held-destinations';

/**
 * Metrics and logs of a committed batch, derived from its verdicts only — the same
 * verdicts its marks were written from, so the counters never disagree with the table.
 */
export function observeBatch(report: BatchReport, metrics: RelayMetrics, log: Logger, nowMs: number): void {
  if (report.claimed === 0) return;
  let published = 0;
  let unconfirmed = 0;
  let refused = 0;
  let waiting = 0;
  const expired: OutboxMessage[] = [];
  const failed: { message: OutboxMessage; error: string; dead: boolean }[] = [];
  report.verdicts.forEach((verdict, index) => {
    const message = report.messages[index] as OutboxMessage;
    switch (verdict.kind) {
      case 'published': {
        published += 1;
        if (verdict.returned) metrics.unroutableTotal.inc();
        const from = Math.max(message.availableAt.getTime(), message.createdAt.getTime());
        metrics.deliveryLatencySeconds.observe(Math.max(0, nowMs - from) / 1000);
        break;
      }
      case 'failed':
        if (verdict.returned) metrics.unroutableTotal.inc();
        metrics.publishFailuresTotal.inc({ reason: verdict.reason });
        failed.push({ message, error: verdict.error, dead: verdict.dead });
        break;
      case 'unconfirmed':
        unconfirmed += 1;
        break;
      case 'refused':
        refused += 1;
        break;
      case 'waiting':
        waiting += 1;
        break;
      case 'expired':
        expired.push(message);
        break;
      case 'parked':
      case 'kept_back':
        break;
    }
  });
  if (unconfirmed > 0) metrics.publishFailuresTotal.inc({ reason: 'connection_lost' }, unconfirmed);
  if (refused > 0) metrics.refusedTotal.inc(refused);
  metrics.publishedTotal.inc(published);
  const dead = failed.filter((f) => f.dead);
  if (dead.length > 0) metrics.deadTotal.inc(dead.length);
  if (expired.length > 0) {
    metrics.expiredTotal.inc(expired.length);
    log.warn({ expired: expired.length, firstMessageId: expired[0]?.messageId }, 'messages expired before they could be published');
  }
  metrics.batchDurationSeconds.observe(report.durationMs / 1000);
  const ms = Math.round(report.durationMs);
  if (failed.length > 0 || unconfirmed > 0) {
    const heldBehindKey = report.verdicts.filter((v) => v.kind === 'parked' || (v.kind === 'kept_back' && v.cause === 'key')).length;
    log.warn(
      { published, failed: failed.length, dead: dead.length, unconfirmed, heldBehindKey, firstError: failed[0]?.error, ms },
      'batch had failures',
    );
  } else {
    log.debug(
      { published, claimed: report.claimed, held: report.keptBack, parked: report.parkedBehindKey, refused, waiting, ms },
      'published batch',
    );
  }
  for (const { message, error } of dead) {
    log.error({ messageId: message.messageId, exchange: message.exchange, attempts: message.attempts + 1, error }, 'message is dead');
  }
}

/**
 * The log lines and the gauge of held destinations: one warn line when a destination is
 * held and one info line when it flows again (naming it, never a payload).
 */
export function holdReporter(metrics: RelayMetrics, log: Logger): HoldListener {
  return {
    held: (d, firstProbeInMs) =>
      log.warn({ exchange: d.exchange, routingKey: d.routingKey, firstProbeInMs }, 'destination held: the broker refuses its messages'),
    flowing: ({ destination: d, heldMs, refused }) =>
      log.info({ exchange: d.exchange, routingKey: d.routingKey, heldMs, refused }, 'destination flows again'),
    abandoned: ({ destination: d, heldMs, refused }) =>
      log.info({ exchange: d.exchange, routingKey: d.routingKey, heldMs, refused }, 'destination no longer held: no message waits for it'),
    changed: (count) => metrics.heldDestinations.set(count),
  };
}
