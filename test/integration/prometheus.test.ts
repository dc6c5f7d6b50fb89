import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { freePort } from '../kit/free-port';
import { OutboxFixture } from '../kit/outbox-fixture';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

// A real Prometheus (Debian's `prometheus` package) loads the shipped scrape config and
// alert rules, scrapes an in-process relay, and is asked through its HTTP API.

const ROOT = join(__dirname, '..', '..');
const PROMETHEUS_DIR = join(ROOT, 'deploy', 'prometheus');

/** The prometheus binary: PROMETHEUS_BIN, else `prometheus` on PATH. Never skips: missing fails. */
function prometheusBinary(): string {
  const configured = process.env['PROMETHEUS_BIN'];
  if (configured) {
    if (!existsSync(configured)) throw new Error(`PROMETHEUS_BIN=${configured} does not exist`);
    return configured;
  }
  const found = spawnSync('sh', ['-c', 'command -v prometheus'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  if (found.status !== 0 || path === '') {
    throw new Error(
      'the prometheus binary is not installed, and this test runs a real Prometheus: ' +
        'install it with `apt-get update && apt-get install -y prometheus` (.ci/run does), or set PROMETHEUS_BIN',
    );
  }
  return path;
}

type Doc = Record<string, any>;

/**
 * deploy/prometheus/prometheus.yml, changed only where a test must: the target is the
 * test's relay, everything is scraped and evaluated every second, the rule files are
 * the shipped ones by absolute path.
 */
function testConfig(relayPort: number): string {
  const config = parse(readFileSync(join(PROMETHEUS_DIR, 'prometheus.yml'), 'utf8')) as Doc;
  config['global'] = { ...config['global'], scrape_interval: '1s', evaluation_interval: '1s' };
  config['rule_files'] = (config['rule_files'] as string[]).map((f) => join(PROMETHEUS_DIR, f));
  const job = (config['scrape_configs'] as Doc[]).find((s) => s['job_name'] === 'outbox-relay');
  if (!job) throw new Error('deploy/prometheus/prometheus.yml has no job "outbox-relay"');
  job['scrape_interval'] = '1s';
  job['static_configs'] = [{ targets: [`127.0.0.1:${relayPort}`] }];
  return stringify(config);
}

interface QueryResult {
  metric: Record<string, string>;
  value: [number, string];
}

const fx = OutboxFixture.forFile('prometheus', { afterEach: 'keep relays' });
const broker = TestBroker.forFile();
let prometheus: ChildProcess | undefined;
let prometheusExited: Promise<unknown> = Promise.resolve();
let prometheusLog = '';
let apiBase = '';
let workDir = '';
let relayPort = 0;

async function api<T>(path: string): Promise<T> {
  const response = await fetch(`${apiBase}${path}`);
  const body = (await response.json()) as { status: string; data: T; error?: string };
  if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? response.status}`);
  return body.data;
}

async function query(promql: string): Promise<QueryResult[]> {
  const data = await api<{ resultType: string; result: QueryResult[] }>(`/api/v1/query?query=${encodeURIComponent(promql)}`);
  return data.result;
}

beforeAll(async () => {
  const binary = prometheusBinary();
  const { relay } = await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '1' });
  relayPort = relay.port;

  workDir = mkdtempSync(join(tmpdir(), 'outbox-prometheus-'));
  writeFileSync(join(workDir, 'prometheus.yml'), testConfig(relayPort));
  const port = await freePort();
  apiBase = `http://127.0.0.1:${port}`;
  prometheus = spawn(
    binary,
    [
      `--config.file=${join(workDir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(workDir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const child = prometheus;
  prometheusExited = new Promise((resolve) => child.once('exit', resolve));
  const collect = (chunk: Buffer): void => {
    prometheusLog = (prometheusLog + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  try {
    await waitFor(
      'Prometheus to be ready',
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}`);
        return (await fetch(`${apiBase}/-/ready`)).ok;
      },
      30_000,
      100,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- prometheus log ---\n${prometheusLog}`, { cause: err });
  }
}, 60_000);

afterAll(async () => {
  if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
    prometheus.kill('SIGTERM');
    const timer = setTimeout(() => prometheus?.kill('SIGKILL'), 10_000);
    await prometheusExited;
    clearTimeout(timer);
  }
  if (workDir) rmSync(workDir, { recursive: true, force: true });
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
  expect(alert['annotations']['summary']).toBe(`1 dead outbox message(s) on 127.0.0.1:${relayPort}`);
});
