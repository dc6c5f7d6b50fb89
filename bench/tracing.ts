import type { Pool } from 'pg';
import { OtlpReceiver } from '../test/kit/otlp-receiver';
import { drain, type DrainResult } from './scenarios';

/** What a drain of the tracing scenario ran: an earlier build without tracing code, or this one with tracing off or on. */
export type TracingArm = 'before' | 'off' | 'on';

/** One drain of the tracing scenario. */
export interface TracingRun extends DrainResult {
  readonly tracing: TracingArm;
  /** Spans the receiver got (on: one per message plus one per batch). */
  readonly spans: number;
}

/**
 * `--only tracing`: the same backlog drained by one relay with tracing off (no OTEL_*
 * variable: its code is not loaded) and on (every message sampled, exported over
 * OTLP/HTTP JSON to a receiver in this process), and, given `beforeBin`, by the relay of
 * an earlier build that has no tracing code at all — alternated, so that drift of the
 * machine hits each alike. Off costs nothing measurable when its figures stay within the
 * spread of the `before` runs.
 */
export async function tracingRuns(pool: Pool, count: number, rounds: number, beforeBin?: string): Promise<TracingRun[]> {
  const receiver = await OtlpReceiver.start();
  const runs: TracingRun[] = [];
  try {
    for (let round = 0; round < rounds; round += 1) {
      const arms: readonly TracingArm[] = beforeBin === undefined ? ['off', 'on'] : ['before', 'off', 'on'];
      for (const tracing of arms) {
        const before = receiver.spans.length;
        const env: Record<string, string> =
          tracing !== 'on'
            ? {}
            : {
                OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
                OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
                OTEL_TRACES_SAMPLER: 'always_on',
                // Large enough that no span is dropped at this rate: every span is paid for.
                OTEL_BSP_MAX_QUEUE_SIZE: '100000',
                OTEL_BSP_SCHEDULE_DELAY: '200',
              };
        const result = await drain(pool, count, 0, 1, env, tracing === 'before' ? beforeBin : undefined);
        runs.push({ ...result, tracing, spans: receiver.spans.length - before });
        receiver.spans.length = 0;
      }
    }
  } finally {
    await receiver.close();
  }
  return runs;
}
