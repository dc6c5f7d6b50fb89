import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { freePort } from './free-port';
import { waitFor } from './wait';

const ROOT = join(__dirname, '..', '..');
/** The shipped Prometheus config and rules. */
export const PROMETHEUS_DIR = join(ROOT, 'deploy', 'prometheus');

/** Prometheus's YAML and JSON, as parsed. */
export type Doc = Record<string, any>;

/** One sample of an instant query. */
export interface QueryResult {
  metric: Record<string, string>;
  value: [number, string];
}

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

/**
 * A real Prometheus (Debian's `prometheus` package) of its own — a temporary directory, a
 * free port — loading the shipped scrape config and alert rules and scraping one relay.
 * `stop()` ends it and removes its directory.
 */
export class PrometheusServer {
  private log = '';

  private constructor(
    private readonly child: ChildProcess,
    private readonly exited: Promise<unknown>,
    private readonly workDir: string,
    readonly apiBase: string,
  ) {
    const collect = (chunk: Buffer): void => {
      this.log = (this.log + chunk.toString('utf8')).slice(-20_000);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
  }

  /** Starts it scraping the relay on `relayPort`; resolves once it is ready. */
  static async start(relayPort: number): Promise<PrometheusServer> {
    const binary = prometheusBinary();
    const workDir = mkdtempSync(join(tmpdir(), 'outbox-prometheus-'));
    writeFileSync(join(workDir, 'prometheus.yml'), testConfig(relayPort));
    const port = await freePort();
    const child = spawn(
      binary,
      [
        `--config.file=${join(workDir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(workDir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const server = new PrometheusServer(child, exited, workDir, `http://127.0.0.1:${port}`);
    try {
      await waitFor(
        'Prometheus to be ready',
        async () => {
          if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}`);
          return (await fetch(`${server.apiBase}/-/ready`)).ok;
        },
        30_000,
        100,
      );
    } catch (err) {
      const log = server.log;
      await server.stop();
      throw new Error(`${(err as Error).message}\n--- prometheus log ---\n${log}`, { cause: err });
    }
    return server;
  }

  /** GET `path` of the HTTP API; its `data`, or an error naming what failed. */
  async api<T>(path: string): Promise<T> {
    const response = await fetch(`${this.apiBase}${path}`);
    const body = (await response.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`${path}: ${body.error ?? response.status}`);
    return body.data;
  }

  async query(promql: string): Promise<QueryResult[]> {
    const data = await this.api<{ resultType: string; result: QueryResult[] }>(`/api/v1/query?query=${encodeURIComponent(promql)}`);
    return data.result;
  }

  /** The alerts pending or firing now. */
  async alerts(): Promise<Doc[]> {
    return (await this.api<{ alerts: Doc[] }>('/api/v1/alerts')).alerts;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.workDir, { recursive: true, force: true });
  }
}
