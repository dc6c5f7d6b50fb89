import { isDeepStrictEqual } from 'node:util';
import type { ConsumeMessage } from 'amqplib';
import { errorMessage, OutboxError, type ErrorCode } from '../errors';
import type { SelftestRow } from '../outbox/selftest-store';
import { isDatabaseAway } from '../util/outage';
import { escapeControls } from '../util/terminal-text';
import type { Io } from './io';

/** One step of `outbox-relay selftest` as `--json` reports it. */
export interface StepRecord {
  readonly step: string;
  readonly ok: boolean;
  readonly ms: number;
  readonly detail?: string;
}

/** Width of a step's name with its dots: `connect broker ........ ok`. */
const LABEL_WIDTH = 22;

/** The one-line reason of anything thrown; an AggregateError (every address refused) names each. */
export function reason(err: unknown): string {
  if (err instanceof AggregateError && err.message === '') {
    return [...new Set(err.errors.map((e: unknown) => errorMessage(e)))].join('; ');
  }
  return errorMessage(err);
}

/** The error a failed step throws: one line naming the step; the cause's code kept where it has one. */
export function failure(step: string, err: unknown): OutboxError {
  let code: ErrorCode = 'CHECK_FAILED';
  if (err instanceof OutboxError) code = err.code;
  else if (isDatabaseAway(err)) code = 'DATABASE_UNAVAILABLE';
  return new OutboxError(code, `selftest failed at ${step}: ${reason(err)}`, { cause: err });
}

/**
 * The self-test's progress: each step timed, printed as it ends (unless the output is
 * JSON) and recorded for the JSON report.
 */
export class Steps {
  readonly records: StepRecord[] = [];
  /** The failures already recorded: a step inside another is not reported twice. */
  private readonly failures = new WeakSet<OutboxError>();

  constructor(
    private readonly io: Io,
    private readonly quiet: boolean,
  ) {}

  /** Runs `work` as `step`: an ok line with `detail` of its value, or a FAIL line and the step's failure thrown. */
  async run<T>(step: string, work: () => Promise<T>, detail?: (value: T) => string | undefined): Promise<T> {
    const started = performance.now();
    let value: T;
    try {
      value = await work();
    } catch (err: unknown) {
      throw this.fail(step, err, started);
    }
    this.done(step, started, detail?.(value));
    return value;
  }

  /** Records `step` as done since `started` (performance.now()). */
  done(step: string, started: number, detail?: string): void {
    this.record({ step, ok: true, ms: since(started), ...(detail === undefined ? {} : { detail }) }, true);
  }

  /** Records `step` as done, printed as a sentence (`text` of its ms) instead of a dotted line. */
  note(step: string, started: number, text: (ms: number) => string): void {
    const ms = since(started);
    this.record({ step, ok: true, ms, detail: text(ms) }, false);
  }

  /** Records `step` as failed and returns the error to throw; a failure already recorded (an inner step's) is returned as it is. */
  fail(step: string, err: unknown, started = performance.now()): OutboxError {
    if (err instanceof OutboxError && this.failures.has(err)) return err;
    const error = failure(step, err);
    this.failures.add(error);
    this.record({ step, ok: false, ms: since(started), detail: reason(err) }, true);
    return error;
  }

  private record(record: StepRecord, dotted: boolean): void {
    this.records.push(record);
    if (this.quiet) return;
    if (!dotted) {
      this.io.out(escapeControls(record.detail ?? record.step));
      return;
    }
    const label = `${record.step} `.padEnd(LABEL_WIDTH, '.');
    const detail = record.detail === undefined ? '' : `  ${escapeControls(record.detail)}`;
    this.io.out(`${label} ${(record.ok ? 'ok' : 'FAIL').padEnd(4)} ${String(record.ms).padStart(4)} ms${detail}`);
  }
}

function since(started: number): number {
  return Math.round(performance.now() - started);
}

/** What of the delivered canary differs from the row that was inserted: empty when it arrived intact. */
export function selftestDifferences(delivered: ConsumeMessage, row: SelftestRow): string[] {
  const { properties } = delivered;
  const changes: string[] = [];
  if (properties.messageId !== row.messageId) changes.push(`message_id ${String(properties.messageId)} instead of ${row.messageId}`);
  if (delivered.fields.routingKey !== row.routingKey)
    changes.push(`routing key "${delivered.fields.routingKey}" instead of "${row.routingKey}"`);
  let payload: unknown;
  try {
    payload = JSON.parse(delivered.content.toString('utf8')) as unknown;
  } catch {
    payload = undefined;
  }
  if (!isDeepStrictEqual(payload, row.payload)) changes.push(`payload (${delivered.content.length} bytes) is not the one inserted`);
  const headers = (properties.headers ?? {}) as Record<string, unknown>;
  for (const [name, value] of Object.entries(row.headers)) {
    if (headers[name] !== value) changes.push(`header ${name} is ${JSON.stringify(headers[name]) ?? 'missing'}`);
  }
  if (properties.type !== row.messageType) changes.push(`type ${JSON.stringify(properties.type) ?? 'missing'}`);
  if (properties.correlationId !== row.correlationId) changes.push('correlation_id differs');
  if (properties.contentType !== 'application/json') changes.push(`content type ${JSON.stringify(properties.contentType) ?? 'missing'}`);
  if (properties.deliveryMode !== 2) changes.push('not persistent (delivery mode 2)');
  return changes;
}
