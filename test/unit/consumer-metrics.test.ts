import { Registry } from 'prom-client';
import { ConsumerMetrics } from '../../src/consumer/metrics';

test('the metrics render through a prom-client registry, shared by consumers of one registry', async () => {
  const registry = new Registry();
  const a = new ConsumerMetrics(registry, 'orders');
  const b = new ConsumerMetrics(registry, 'payments');
  a.settled('handled');
  a.settled('handled');
  b.settled('duplicate');
  a.attempt('handled', 0.003);
  a.reconnected('cancel');
  a.setConsuming(true);
  const text = await registry.metrics();
  expect(text).toContain('# TYPE outbox_consumer_messages_total counter');
  expect(text).toContain('outbox_consumer_messages_total{queue="orders",outcome="handled"} 2');
  expect(text).toContain('outbox_consumer_messages_total{queue="payments",outcome="duplicate"} 1');
  expect(text).toContain('outbox_consumer_handler_duration_seconds_bucket{queue="orders",outcome="handled",le="0.0025"} 0');
  expect(text).toContain('outbox_consumer_handler_duration_seconds_bucket{queue="orders",outcome="handled",le="0.005"} 1');
  expect(text).toContain('outbox_consumer_handler_duration_seconds_sum{queue="orders",outcome="handled"} 0.003');
  expect(text).toContain('outbox_consumer_reconnects_total{queue="orders",cause="cancel"} 1');
  expect(text).toContain('outbox_consumer_consuming{queue="orders"} 1');
  expect(text).toContain('outbox_consumer_consuming{queue="payments"} 0');
  const json = await registry.getMetricsAsJSON();
  expect(json.map((m) => m.name).sort()).toEqual([
    'outbox_consumer_consuming',
    'outbox_consumer_handler_duration_seconds',
    'outbox_consumer_in_flight_messages',
    'outbox_consumer_messages_total',
    'outbox_consumer_reconnects_total',
    'outbox_consumer_signature_refusals_total',
  ]);
});

test('a name taken by a metric of the service is a clear error', () => {
  const registry = new Registry();
  registry.registerMetric({ name: 'outbox_consumer_messages_total', get: () => Promise.resolve({}), reset: () => undefined } as never);
  expect(() => new ConsumerMetrics(registry, 'orders')).toThrow(
    /^createConsumer: registry: A metric with the name outbox_consumer_messages_total/,
  );
});

test('without a registry the metrics count nowhere', () => {
  expect(() => new ConsumerMetrics(undefined, 'orders').settled('handled')).not.toThrow();
});
