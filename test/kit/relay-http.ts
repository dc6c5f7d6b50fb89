/**
 * A relay's HTTP endpoints as tests, chaos and bench read them: /metrics scraped and
 * parsed into samples, /readyz and /healthz answered with their status code.
 */

/** One sample line of the Prometheus text format: `name{label="value",…} value`. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** One scrape of /metrics, parsed. */
export interface Metrics {
  /** The exposition text as served. */
  readonly text: string;
  readonly samples: readonly Sample[];
  /**
   * The value of the sample `name` whose labels are exactly `labels` (none by default),
   * or undefined when the scrape has no such sample.
   */
  value(name: string, labels?: Readonly<Record<string, string>>): number | undefined;
  /** The type a `# TYPE` line declares for `name` (counter, gauge, histogram, …). */
  type(name: string): string | undefined;
}

const SAMPLE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function sampleValue(text: string): number {
  if (text === '+Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  return Number(text);
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

/** Parses the Prometheus text exposition format (what prom-client serves). */
export function parseMetrics(text: string): Metrics {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line.startsWith('#') || line.trim() === '') continue;
    const match = SAMPLE.exec(line);
    if (!match) throw new Error(`not a line of the Prometheus text format: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(LABEL))
      labels[key!] = value!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: match[1]!, labels, value: sampleValue(match[3]!) });
  }
  return {
    text,
    samples,
    value: (name, labels = {}) => samples.find((s) => s.name === name && sameLabels(s.labels, labels))?.value,
    type: (name) => types.get(name),
  };
}

/** Scrapes http://127.0.0.1:`port`/metrics; fails unless it answers 200. */
export async function readMetrics(port: number): Promise<Metrics> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await response.text();
  if (response.status !== 200) throw new Error(`/metrics on port ${port} answered ${response.status}: ${text.slice(0, 200)}`);
  return parseMetrics(text);
}

/** The status code of GET http://127.0.0.1:`port``path` (e.g. /readyz); 0 when nothing answers. */
export async function endpointStatus(port: number, path: string): Promise<number> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 0;
  }
}

/** GET http://127.0.0.1:`port``path` as one line for a failure message: "503 database=down broker=up …", or "no answer". */
export async function endpointAnswer(port: number, path: string): Promise<string> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    return `${response.status} ${(await response.text()).trim().split('\n').join('; ')}`;
  } catch {
    return 'no answer';
  }
}
