import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { createMetrics } from '../../src/observability/metrics';

// deploy/ (the README's Deployment and Metrics sections): every YAML and JSON file parses; the Kubernetes example wires
// the sidecar as documented; the alert rules and the dashboard name only metrics the
// relay exports. promtool checks the Prometheus files in .ci/run, and
// test/integration/prometheus.test.ts loads them into a real Prometheus.

const ROOT = join(__dirname, '..', '..');
const DEPLOY = join(ROOT, 'deploy');

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? filesUnder(join(dir, entry.name)) : [join(dir, entry.name)],
  );
}

type Doc = Record<string, any>;

/** Every document of a (multi-document) YAML file; fails on any error or warning. */
function yamlDocs(path: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  if (!Array.isArray(docs)) throw new Error(`${path}: not a YAML stream`);
  for (const doc of docs) {
    const problems = [...doc.errors, ...doc.warnings].map((e) => e.message);
    if (problems.length > 0) throw new Error(`${relative(ROOT, path)}: ${problems.join('; ')}`);
  }
  return docs.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

function yamlDoc(path: string): Doc {
  const docs = yamlDocs(join(DEPLOY, path));
  expect(docs).toHaveLength(1);
  return docs[0]!;
}

/** Seconds of a compose duration such as `30s`, `1m30s`. */
function durationSeconds(text: string): number {
  let total = 0;
  for (const [, n, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(n) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit as 'ms' | 's' | 'm' | 'h'];
  }
  return total;
}

const PROMQL_KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'inf',
  'nan',
  'atan2',
]);

/** The metric names a PromQL expression selects (functions, keywords, labels removed). */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ') // strings
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges and subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const names = new Set<string>();
  for (const match of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = stripped.slice(match.index! + match[0].length);
    if (/^\s*\(/.test(after)) continue; // a function call
    if (PROMQL_KEYWORDS.has(match[0].toLowerCase())) continue;
    if (/^\d/.test(stripped.slice(match.index! - 1, match.index!))) continue; // the `m` of a duration, the `e` of 1e3
    names.add(match[0]);
  }
  return [...names];
}

/** What a scrape of the relay can return: its registry, histogram series, and Prometheus's own `up`. */
async function exportedSeriesNames(): Promise<Set<string>> {
  const metrics = await createMetrics().registry.getMetricsAsJSON();
  const names = new Set<string>(['up']);
  for (const metric of metrics) {
    names.add(metric.name);
    if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
    if (String(metric.type) === 'summary') for (const suffix of ['_sum', '_count']) names.add(`${metric.name}${suffix}`);
  }
  return names;
}

describe('deploy/ files', () => {
  const files = filesUnder(DEPLOY).map((f) => relative(DEPLOY, f).split('\\').join(posix.sep));

  test('are YAML, JSON or Markdown only', () => {
    expect(files.filter((f) => !/\.(ya?ml|json|md)$/.test(f))).toEqual([]);
    expect(files).toEqual(
      expect.arrayContaining(['compose.yaml', 'prometheus/prometheus.yml', 'prometheus/alerts.yml', 'grafana/outbox-relay.json']),
    );
  });

  test.each(
    filesUnder(DEPLOY)
      .filter((f) => /\.ya?ml$/.test(f))
      .map((f) => [relative(DEPLOY, f)]),
  )('%s parses as YAML', (file) => {
    const docs = yamlDocs(join(DEPLOY, file));
    expect(docs.length).toBeGreaterThan(0);
    for (const doc of docs) expect(typeof doc).toBe('object');
  });

  test.each(
    filesUnder(DEPLOY)
      .filter((f) => f.endsWith('.json'))
      .map((f) => [relative(DEPLOY, f)]),
  )('%s parses as JSON', (file) => {
    expect(() => JSON.parse(readFileSync(join(DEPLOY, file), 'utf8')) as unknown).not.toThrow();
  });
});

describe('kubernetes/', () => {
  const deployment = yamlDoc('kubernetes/deployment.yaml');
  const pod = deployment['spec']['template'];
  const containers: Doc[] = pod['spec']['containers'];
  const relay = containers.find((c) => c['name'] === 'outbox-relay')!;
  const env = (container: Doc): Record<string, string> =>
    Object.fromEntries((container['env'] as Doc[]).map((e) => [e['name'] as string, e['value'] as string]));
  const secrets = yamlDocs(join(DEPLOY, 'kubernetes', 'secret.example.yaml'));

  /** The Secret key a file path inside `container` comes from, or undefined if no secret volume holds it. */
  function secretKeyOf(container: Doc, path: string): { secretName: string; key: string } | undefined {
    for (const mount of (container['volumeMounts'] ?? []) as Doc[]) {
      const dir = String(mount['mountPath']).replace(/\/$/, '');
      if (!path.startsWith(`${dir}/`)) continue;
      const volume = (pod['spec']['volumes'] as Doc[]).find((v) => v['name'] === mount['name']);
      if (!volume?.['secret']) return undefined;
      const file = path.slice(dir.length + 1);
      const items = volume['secret']['items'] as Doc[] | undefined;
      const key = items ? items.find((i) => i['path'] === file)?.['key'] : file;
      return key === undefined ? undefined : { secretName: volume['secret']['secretName'], key };
    }
    return undefined;
  }

  function secretHasKey(secretName: string, key: string): boolean {
    const secret = secrets.find((s) => s['kind'] === 'Secret' && s['metadata']['name'] === secretName);
    return secret !== undefined && key in { ...secret['stringData'], ...secret['data'] };
  }

  test('a Deployment runs the service with the relay as a sidecar container', () => {
    expect(deployment).toMatchObject({ apiVersion: 'apps/v1', kind: 'Deployment' });
    expect(containers.length).toBeGreaterThanOrEqual(2);
    expect(relay).toBeDefined();
    expect(relay['image']).toMatch(/outbox-relay/);
    expect(relay['args'] ?? ['run']).toEqual(['run']);
  });

  test('the relay has a /healthz liveness (and startup) probe and a /readyz readiness probe on its HTTP port', () => {
    const port = (relay['ports'] as Doc[])[0]!;
    const probePort = (probe: Doc): unknown => probe['httpGet']['port'];
    expect(relay['livenessProbe']['httpGet']['path']).toBe('/healthz');
    expect(relay['readinessProbe']['httpGet']['path']).toBe('/readyz');
    if (relay['startupProbe']) expect(relay['startupProbe']['httpGet']['path']).toBe('/healthz');
    for (const probe of [relay['livenessProbe'], relay['readinessProbe']])
      expect([port['name'], port['containerPort']]).toContain(probePort(probe));
    expect(String(port['containerPort'])).toBe(env(relay)['OUTBOX_HTTP_PORT'] ?? '9464');
  });

  test('the relay has resource requests and limits', () => {
    expect(relay['resources']['requests']).toEqual(expect.objectContaining({ cpu: expect.anything(), memory: expect.anything() }));
    expect(relay['resources']['limits']).toEqual(expect.objectContaining({ memory: expect.anything() }));
  });

  test('the URLs come from a Secret mounted as files (OUTBOX_*_URL_FILE), never from plain env values', () => {
    const vars = env(relay);
    for (const name of ['OUTBOX_DATABASE_URL', 'OUTBOX_AMQP_URL', 'DATABASE_URL']) expect(vars[name]).toBeUndefined();
    for (const name of ['OUTBOX_DATABASE_URL_FILE', 'OUTBOX_AMQP_URL_FILE']) {
      const source = secretKeyOf(relay, vars[name]!);
      expect({ name, source }).toEqual({ name, source: expect.objectContaining({ key: expect.any(String) }) });
      expect(secretHasKey(source!.secretName, source!.key)).toBe(true);
    }
    for (const mount of relay['volumeMounts'] as Doc[]) expect(mount['readOnly']).toBe(true);
  });

  test('terminationGracePeriodSeconds exceeds OUTBOX_SHUTDOWN_TIMEOUT_MS', () => {
    const shutdownMs = Number(env(relay)['OUTBOX_SHUTDOWN_TIMEOUT_MS'] ?? 10_000);
    expect(pod['spec']['terminationGracePeriodSeconds']).toBeGreaterThan(shutdownMs / 1000);
  });

  test('the pod runs as non-root and carries the prometheus.io scrape annotations for the relay port', () => {
    expect(pod['spec']['securityContext']['runAsNonRoot']).toBe(true);
    expect(pod['metadata']['annotations']).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/path': '/metrics' });
    expect(pod['metadata']['annotations']['prometheus.io/port']).toBe(String((relay['ports'] as Doc[])[0]!['containerPort']));
  });

  test('the migration Job runs `migrate` with the same image and its URL from a mounted Secret', () => {
    const job = yamlDoc('kubernetes/migration-job.yaml');
    expect(job).toMatchObject({ apiVersion: 'batch/v1', kind: 'Job' });
    const container = (job['spec']['template']['spec']['containers'] as Doc[])[0]!;
    expect(container['image']).toBe(relay['image']);
    expect(container['args']).toEqual(['migrate']);
    expect(job['spec']['template']['spec']['restartPolicy']).toBe('Never');
    const path = env(container)['OUTBOX_DATABASE_URL_FILE']!;
    const mount = (container['volumeMounts'] as Doc[]).find((m) => path.startsWith(`${m['mountPath']}/`))!;
    const volume = (job['spec']['template']['spec']['volumes'] as Doc[]).find((v) => v['name'] === mount['name'])!;
    const item = (volume['secret']['items'] as Doc[]).find((i) => path.endsWith(`/${i['path']}`))!;
    expect(secretHasKey(volume['secret']['secretName'], item['key'])).toBe(true);
  });

  test('the PodMonitor selects the sidecar pods, scrapes the metrics port and sets job="outbox-relay" for the alerts', () => {
    const monitor = yamlDoc('kubernetes/podmonitor.yaml');
    expect(monitor).toMatchObject({ apiVersion: 'monitoring.coreos.com/v1', kind: 'PodMonitor' });
    expect(pod['metadata']['labels']).toMatchObject(monitor['spec']['selector']['matchLabels']);
    const endpoint = (monitor['spec']['podMetricsEndpoints'] as Doc[])[0]!;
    expect(endpoint['port']).toBe((relay['ports'] as Doc[])[0]!['name']);
    expect(endpoint['relabelings']).toEqual(
      expect.arrayContaining([expect.objectContaining({ targetLabel: 'job', replacement: 'outbox-relay' })]),
    );
  });
});

describe('compose.yaml', () => {
  const compose = yamlDoc('compose.yaml');
  const services = compose['services'] as Record<string, Doc>;

  test('runs PostgreSQL, RabbitMQ, a one-shot migration, the relay, Prometheus and Grafana', () => {
    expect(Object.keys(services)).toEqual(
      expect.arrayContaining(['postgres', 'rabbitmq', 'migrate', 'outbox-relay', 'prometheus', 'grafana']),
    );
    expect(services['migrate']!['command']).toEqual(['migrate']);
    expect(services['outbox-relay']!['depends_on']['migrate']).toEqual({ condition: 'service_completed_successfully' });
  });

  test('gives the relay longer than its shutdown timeout to stop', () => {
    const relay = services['outbox-relay']!;
    const shutdownMs = Number(relay['environment']?.['OUTBOX_SHUTDOWN_TIMEOUT_MS'] ?? 10_000);
    expect(durationSeconds(String(relay['stop_grace_period']))).toBeGreaterThan(shutdownMs / 1000);
  });
});

describe('prometheus/ and grafana/', () => {
  const config = yamlDoc('prometheus/prometheus.yml');
  const rules = yamlDoc('prometheus/alerts.yml');
  const ruleList = (rules['groups'] as Doc[]).flatMap((g) => g['rules'] as Doc[]);

  test('the scrape job is named outbox-relay, as the rules expect, and loads alerts.yml', () => {
    const jobs = (config['scrape_configs'] as Doc[]).map((s) => s['job_name']);
    expect(jobs).toContain('outbox-relay');
    expect(config['rule_files']).toContain('alerts.yml');
    for (const rule of ruleList) {
      for (const [, job] of String(rule['expr']).matchAll(/job="([^"]+)"/g)) expect(jobs).toContain(job);
    }
  });

  test('there is an alert for lag, dead messages, relay down, dependency down and blocked keys, each with a severity and what to do', () => {
    const byMetric = new Map(ruleList.map((r) => [metricNames(String(r['expr'])).join(','), r]));
    for (const metric of ['outbox_lag_seconds', 'outbox_dead_messages', 'up', 'outbox_up', 'outbox_blocked_keys']) {
      expect({ metric, alerted: [...byMetric.keys()].some((k) => k.split(',').includes(metric)) }).toEqual({ metric, alerted: true });
    }
    for (const rule of ruleList) {
      expect(rule).toEqual(expect.objectContaining({ alert: expect.any(String), for: expect.any(String) }));
      expect(['warning', 'critical']).toContain(rule['labels']['severity']);
      expect(rule['annotations']['summary']).toEqual(expect.any(String));
      expect(rule['annotations']['description']).toMatch(/outbox-relay|GET \//);
    }
  });

  test('every alert is exercised by the promtool unit tests', () => {
    const tests = yamlDoc('prometheus/alerts.test.yml');
    const tested = new Set((tests['tests'] as Doc[]).flatMap((t) => (t['alert_rule_test'] as Doc[]).map((a) => a['alertname'] as string)));
    expect([...tested].sort()).toEqual(ruleList.map((r) => r['alert'] as string).sort());
  });

  test('the alert rules name only metrics the relay exports', async () => {
    const exported = await exportedSeriesNames();
    const used = ruleList.flatMap((r) => metricNames(String(r['expr'])));
    expect(used.length).toBeGreaterThan(0);
    expect(used.filter((name) => !exported.has(name))).toEqual([]);
  });

  test('the Grafana dashboard queries only metrics the relay exports', async () => {
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana', 'outbox-relay.json'), 'utf8')) as unknown;
    const exprs: string[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node && typeof node === 'object') {
        const record = node as Record<string, unknown>;
        if (typeof record['expr'] === 'string') exprs.push(record['expr']);
        Object.values(record).forEach(walk);
      }
    };
    walk(dashboard);
    expect(exprs.length).toBeGreaterThan(5);
    const exported = await exportedSeriesNames();
    const unknown = exprs.flatMap(metricNames).filter((name) => !exported.has(name));
    expect(unknown).toEqual([]);
  });

  test('metricNames() finds the selected metrics, not functions, labels or durations', () => {
    expect(metricNames('sum without (reason) (rate(outbox_publish_failures_total{reason="nack"}[5m])) > 1').sort()).toEqual([
      'outbox_publish_failures_total',
    ]);
    expect(metricNames('up{job="outbox-relay"} == 0 or absent(up{job="outbox-relay"})')).toEqual(['up']);
    expect(metricNames('histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval]))) / y offset 5m')).toEqual([
      'x_bucket',
      'y',
    ]);
  });
});
