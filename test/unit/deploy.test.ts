import { readFileSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import { DEPLOY, filesUnder, yamlDoc, yamlDocs, type Doc } from './deploy-yaml';

// deploy/ (docs/deployment.md and the metrics of docs/runbook.md): every YAML and JSON file parses; the Kubernetes example wires
// the sidecar as documented; the alert rules and the dashboard name only metrics the
// relay exports. promtool checks the Prometheus files in .ci/run, and
// test/integration/prometheus.test.ts loads them into a real Prometheus.
// The Kubernetes checks are in deploy-kubernetes.test.ts, the Prometheus and Grafana ones in
// deploy-prometheus-grafana.test.ts.

/** Seconds of a compose duration such as `30s`, `1m30s`. */
function durationSeconds(text: string): number {
  let total = 0;
  for (const [, n, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(n) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit as 'ms' | 's' | 'm' | 'h'];
  }
  return total;
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
