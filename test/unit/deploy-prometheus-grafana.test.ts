import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMetrics } from '../../src/observability/metrics';
import { DEPLOY, yamlDoc, type Doc } from './deploy-yaml';

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

  test('there is an alert for lag, dead messages, relay down, dependency down, blocked keys and held destinations, each with a severity and what to do', () => {
    const byMetric = new Map(ruleList.map((r) => [metricNames(String(r['expr'])).join(','), r]));
    for (const metric of [
      'outbox_lag_seconds',
      'outbox_dead_messages',
      'up',
      'outbox_up',
      'outbox_blocked_keys',
      'outbox_held_destinations',
    ]) {
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

  test('the Grafana dashboard has a panel of held destinations and refused publishes', () => {
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana', 'outbox-relay.json'), 'utf8')) as { panels: Doc[] };
    const panel = dashboard.panels.find((p) =>
      (p['targets'] as Doc[] | undefined)?.some((t) => String(t['expr']).includes('outbox_held_destinations')),
    );
    expect(panel?.['title']).toBe('Held destinations and refused publishes');
    expect((panel?.['targets'] as Doc[]).map((t) => metricNames(String(t['expr'])))).toEqual([
      ['outbox_held_destinations'],
      ['outbox_publishes_refused_total'],
    ]);
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
