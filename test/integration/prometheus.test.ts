import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { OutboxFixture } from '../kit/outbox-fixture';
import { PROMETHEUS_DIR, PrometheusServer, type Doc } from '../kit/prometheus-server';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

// A real Prometheus (Debian's `prometheus` package) loads the shipped scrape config and
// alert rules, scrapes an in-process relay, and is asked through its HTTP API.

const fx = OutboxFixture.forFile('prometheus', { afterEach: 'keep relays' });
const broker = TestBroker.forFile();
let prometheus: PrometheusServer | undefined;
let relayPort = 0;

async function api<T>(path: string): Promise<T> {
  return (prometheus as PrometheusServer).api<T>(path);
}

function query(promql: string): ReturnType<PrometheusServer['query']> {
  return (prometheus as PrometheusServer).query(promql);
}

beforeAll(async () => {
  const { relay } = await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '1' });
  relayPort = relay.port;
  prometheus = await PrometheusServer.start(relayPort);
}, 60_000);

afterAll(async () => {
  await prometheus?.stop();
});

test('Prometheus scrapes the relay with the shipped job: outbox_lag_seconds and the published counter', async () => {
  const queue = uniqueName('prom');
  const received = await broker.queue(queue);
  await fx.insertBacklog({ count: 5, routingKey: queue });
  await waitFor('5 messages delivered', () => received.length === 5);

  const target = await waitFor(
    'the relay target up',
    async () => {
      const { activeTargets } = await api<{ activeTargets: Doc[] }>('/api/v1/targets');
      return activeTargets.find((t) => t['labels']['job'] === 'outbox-relay' && t['health'] === 'up');
    },
    20_000,
    200,
  );
  expect(target['scrapeUrl']).toBe(`http://127.0.0.1:${relayPort}/metrics`);

  const published = await waitFor(
    'outbox_messages_published_total >= 5 in Prometheus',
    async () => {
      const [sample] = await query('outbox_messages_published_total{job="outbox-relay"}');
      return sample && Number(sample.value[1]) >= 5 ? sample : undefined;
    },
    20_000,
    250,
  );
  expect(Number(published.value[1])).toBe(5);
  expect(published.metric).toMatchObject({ job: 'outbox-relay', instance: `127.0.0.1:${relayPort}` });

  const [lag] = await query('outbox_lag_seconds{job="outbox-relay"}');
  expect(lag).toBeDefined();
  expect(Number(lag!.value[1])).toBeGreaterThanOrEqual(0);
  const up = await query('outbox_up{job="outbox-relay"}');
  expect(Object.fromEntries(up.map((s) => [s.metric['dependency'], s.value[1]]))).toEqual({ database: '1', broker: '1' });
});

test('the shipped alert rules are loaded and evaluate without errors', async () => {
  const shipped = (parse(readFileSync(join(PROMETHEUS_DIR, 'alerts.yml'), 'utf8')) as Doc)['groups'] as Doc[];
  const names = shipped.flatMap((g) => (g['rules'] as Doc[]).map((r) => r['alert'] as string)).sort();
  const groups = await waitFor(
    'every rule evaluated',
    async () => {
      const data = await api<{ groups: Doc[] }>('/api/v1/rules?type=alert');
      const rules = data.groups.flatMap((g) => g['rules'] as Doc[]);
      return rules.length === names.length && rules.every((r) => r['health'] === 'ok') ? data.groups : undefined;
    },
    20_000,
    250,
  );
  expect(groups.map((g) => g['name'])).toEqual(shipped.map((g) => g['name']));
  expect(groups.flatMap((g) => (g['rules'] as Doc[]).map((r) => r['name'] as string)).sort()).toEqual(names);
  // A healthy relay: nothing fires (OutboxRelayDown would, were the job name wrong).
  const { alerts } = await api<{ alerts: Doc[] }>('/api/v1/alerts');
  expect(alerts.filter((a) => a['state'] === 'firing')).toEqual([]);
});

test('a dead message makes OutboxDeadMessages pending from the scraped gauge', async () => {
  await fx.insert([{ exchange: uniqueName('missing'), routing_key: 'x', payload: { dead: true } }]);
  await waitFor(
    'the dead gauge in Prometheus',
    async () => {
      const [sample] = await query('outbox_dead_messages{job="outbox-relay"}');
      return sample?.value[1] === '1';
    },
    20_000,
    250,
  );
  const alert = await waitFor(
    'OutboxDeadMessages pending',
    async () => {
      const { alerts } = await api<{ alerts: Doc[] }>('/api/v1/alerts');
      return alerts.find((a) => a['labels']['alertname'] === 'OutboxDeadMessages');
    },
    20_000,
    250,
  );
  // `for: 1m` keeps it pending within this test.
  expect(alert).toMatchObject({ state: 'pending', labels: { severity: 'warning', job: 'outbox-relay' } });
  // One alert per outbox (the max over its replicas): no instance in it.
  expect(alert['annotations']['summary']).toBe('1 dead outbox message(s)');
});
