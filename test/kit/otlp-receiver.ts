import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { waitFor } from './wait';

/** A span as the receiver decoded it from OTLP/JSON. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** Undefined for a root span. */
  readonly parentSpanId: string | undefined;
  readonly name: string;
  readonly kind: 'UNSPECIFIED' | 'INTERNAL' | 'SERVER' | 'CLIENT' | 'PRODUCER' | 'CONSUMER';
  readonly startMs: number;
  readonly endMs: number;
  readonly attributes: Readonly<Record<string, unknown>>;
  readonly status: { readonly code: 'UNSET' | 'OK' | 'ERROR'; readonly message?: string };
  readonly links: readonly { readonly traceId: string; readonly spanId: string }[];
  readonly events: readonly { readonly name: string; readonly attributes: Readonly<Record<string, unknown>> }[];
  /** The resource's `service.name`. */
  readonly service: string;
}

/** One export request as it arrived. */
export interface ExportRequest {
  readonly path: string;
  readonly contentType: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly bytes: number;
}

const KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'] as const;
const STATUS = ['UNSET', 'OK', 'ERROR'] as const;

interface OtlpValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: OtlpValue[] };
}
interface OtlpKeyValue {
  key: string;
  value: OtlpValue;
}

function value(v: OtlpValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(value);
  return undefined;
}

function attributes(list: readonly OtlpKeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, value(kv.value)]));
}

/** Nanoseconds since the epoch (a decimal string or number) → ms, with sub-ms precision. */
function ms(nanos: string | number): number {
  const n = BigInt(nanos);
  return Number(n / 1_000n) / 1_000;
}

/**
 * An OTLP/HTTP receiver on a free loopback port, as a test starts it: it answers every
 * export with 200 and keeps the spans of the JSON ones (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`,
 * decoded as the OTLP/JSON encoding says: hex ids, nanosecond strings) and a record of every
 * request, protobuf ones included.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly requests: ExportRequest[] = [];
  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<OtlpReceiver> {
    const holder: { receiver?: OtlpReceiver } = {};
    const server = createServer((req, res) => void holder.receiver?.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    holder.receiver = new OtlpReceiver(server, `http://127.0.0.1:${port}`);
    return holder.receiver;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const contentType = String(req.headers['content-type'] ?? '');
    this.requests.push({ path: req.url ?? '', contentType, headers: req.headers, bytes: body.length });
    if (contentType.startsWith('application/json')) this.decode(JSON.parse(body.toString('utf8')) as ExportBody);
    res.writeHead(200, { 'content-type': contentType.startsWith('application/json') ? 'application/json' : 'application/x-protobuf' });
    res.end(contentType.startsWith('application/json') ? '{}' : undefined);
  }

  private decode(body: ExportBody): void {
    for (const resourceSpans of body.resourceSpans ?? []) {
      const service = String(attributes(resourceSpans.resource?.attributes)['service.name'] ?? '');
      for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
        for (const span of scopeSpans.spans ?? []) {
          this.spans.push({
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId ? span.parentSpanId : undefined,
            name: span.name,
            kind: KINDS[span.kind ?? 0] ?? 'UNSPECIFIED',
            startMs: ms(span.startTimeUnixNano),
            endMs: ms(span.endTimeUnixNano),
            attributes: attributes(span.attributes),
            status: {
              code: STATUS[span.status?.code ?? 0] ?? 'UNSET',
              ...(span.status?.message ? { message: span.status.message } : {}),
            },
            links: (span.links ?? []).map((l) => ({ traceId: l.traceId, spanId: l.spanId })),
            events: (span.events ?? []).map((e) => ({ name: e.name, attributes: attributes(e.attributes) })),
            service,
          });
        }
      }
    }
  }

  /** The first span `match` accepts, once it arrived. */
  waitForSpan(what: string, match: (span: ReceivedSpan) => boolean, timeoutMs = 15_000): Promise<ReceivedSpan> {
    return waitFor(what, () => this.spans.find(match), timeoutMs);
  }

  /** The spans of one trace, in start order. */
  trace(traceId: string): ReceivedSpan[] {
    return this.spans.filter((s) => s.traceId === traceId).sort((a, b) => a.startMs - b.startMs);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

interface ExportBody {
  resourceSpans?: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: {
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind?: number;
        startTimeUnixNano: string | number;
        endTimeUnixNano: string | number;
        attributes?: OtlpKeyValue[];
        status?: { code?: number; message?: string };
        links?: { traceId: string; spanId: string }[];
        events?: { name: string; attributes?: OtlpKeyValue[] }[];
      }[];
    }[];
  }[];
}

/**
 * A span the test's own SDK recorded (an InMemorySpanExporter), in the receiver's terms.
 * The OTLP exporters cannot send from inside Jest (they `import('http')` lazily, which a
 * Jest module context refuses without --experimental-vm-modules), so the service and
 * consumer spans of a test stay in memory and only the relay, a process, exports.
 */
export function fromReadableSpan(span: ReadableSpan): ReceivedSpan {
  const toMs = ([seconds, nanos]: readonly [number, number]): number => seconds * 1_000 + nanos / 1e6;
  const parent = span.parentSpanContext?.spanId;
  return {
    traceId: span.spanContext().traceId,
    spanId: span.spanContext().spanId,
    parentSpanId: parent,
    name: span.name,
    // The API's SpanKind counts from INTERNAL = 0; OTLP's from UNSPECIFIED = 0.
    kind: KINDS[span.kind + 1] ?? 'UNSPECIFIED',
    startMs: toMs(span.startTime),
    endMs: toMs(span.endTime),
    attributes: { ...span.attributes },
    status: { code: STATUS[span.status.code] ?? 'UNSET', ...(span.status.message ? { message: span.status.message } : {}) },
    links: span.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId })),
    events: span.events.map((e) => ({ name: e.name, attributes: { ...e.attributes } })),
    service: String(span.resource.attributes['service.name'] ?? ''),
  };
}

/**
 * A trace as an ASCII waterfall (the picture in docs/tracing.md): one line per span, indented under
 * its parent, a bar placed on the trace's time axis, the duration, and the span and parent
 * ids. Spans whose parent is not in `spans` start a new root.
 */
export function waterfall(spans: readonly ReceivedSpan[], width = 40): string {
  if (spans.length === 0) return '';
  const start = Math.min(...spans.map((s) => s.startMs));
  const end = Math.max(...spans.map((s) => s.endMs));
  const scale = width / Math.max(end - start, 0.001);
  const ids = new Set(spans.map((s) => s.spanId));
  const children = (parent: string | undefined): ReceivedSpan[] =>
    spans
      .filter((s) => (parent === undefined ? s.parentSpanId === undefined || !ids.has(s.parentSpanId) : s.parentSpanId === parent))
      .sort((a, b) => a.startMs - b.startMs);
  const lines: string[] = [];
  const depthOf = (span: ReceivedSpan): number => {
    let depth = 0;
    for (let s: ReceivedSpan | undefined = span; s?.parentSpanId !== undefined; s = spans.find((p) => p.spanId === s?.parentSpanId))
      depth += 1;
    return depth;
  };
  const labelOf = (span: ReceivedSpan): string => `${span.name} [${span.kind}${span.status.code === 'ERROR' ? ', ERROR' : ''}]`;
  const nameWidth = Math.max(...spans.map((s) => 2 * depthOf(s) + labelOf(s).length)) + 1;
  const walk = (span: ReceivedSpan, depth: number): void => {
    const from = Math.floor((span.startMs - start) * scale);
    const length = Math.max(1, Math.round((span.endMs - span.startMs) * scale));
    const bar = `${' '.repeat(from)}${'█'.repeat(Math.min(length, width - from))}`.padEnd(width);
    const label = `${'  '.repeat(depth)}${labelOf(span)}`.padEnd(nameWidth);
    const ms = `${(span.endMs - span.startMs).toFixed(1)} ms`.padStart(9);
    lines.push(`${label} |${bar}| ${ms}  span ${span.spanId} ← ${span.parentSpanId ?? 'root'}`);
    for (const child of children(span.spanId)) walk(child, depth + 1);
  };
  for (const root of children(undefined)) walk(root, 0);
  return lines.join('\n');
}
