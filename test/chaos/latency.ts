import type { Fault } from './faults';
import type { Written } from './producers';

/**
 * The bound on commit → consumer for a message committed while a relay is frozen (ms):
 * a frozen leader holds nothing for long, its lease expires and another replica takes
 * over and publishes what it held.
 */
export const FREEZE_LATENCY_BOUND_MS = 10_000;
/** A message committed this long (ms) before a freeze began may already be claimed by the frozen leader. */
const BEFORE_FREEZE_MS = 1_000;

/** How long committed messages took from their commit to their first arrival at the consumer. */
export interface LatencyFigures {
  /** The longest of the run, and its 99th percentile (ms). */
  readonly maxMs: number;
  readonly p99Ms: number;
  /** When the message of the longest was committed (ms since the epoch): which fault it met. */
  readonly maxCommittedAt: number;
  /** The messages committed from 1 s before a freeze until its end, and the longest of them (ms). */
  readonly duringFreezes: number;
  readonly duringFreezesMaxMs: number;
  /** Those of them held to FREEZE_LATENCY_BOUND_MS (no other fault within the bound after their commit), and the longest (ms). */
  readonly judged: number;
  readonly judgedMaxMs: number;
}

/**
 * Commit → first arrival of every delivered message (lost ones are counted elsewhere).
 * A message committed during a freeze must arrive within FREEZE_LATENCY_BOUND_MS of its
 * commit, unless another fault (a poison message aside) overlaps that time: that one
 * may delay it on its own. Each message that arrives later is a violation.
 */
export function commitLatencies(
  good: readonly Written[],
  firstAt: ReadonlyMap<string, number>,
  faults: readonly Fault[],
  violations: string[],
): LatencyFigures {
  const latencies: number[] = [];
  let slowest: Written | undefined;
  let slowestMs = 0;
  const freezes = faults.filter((f) => f.kind === 'freeze');
  const others = faults.filter((f) => f.kind !== 'freeze' && f.kind !== 'poison');
  let duringFreezes = 0;
  let duringFreezesMaxMs = 0;
  let judged = 0;
  let judgedMaxMs = 0;
  const late: { readonly w: Written; readonly ms: number; readonly freeze: Fault }[] = [];
  for (const w of good) {
    const at = firstAt.get(w.id);
    if (at === undefined) continue;
    const ms = at - w.committedAt;
    latencies.push(ms);
    if (ms >= slowestMs) [slowest, slowestMs] = [w, ms];
    const freeze = freezes.find((f) => w.committedAt >= f.start - BEFORE_FREEZE_MS && w.committedAt <= f.end);
    if (!freeze) continue;
    duringFreezes += 1;
    duringFreezesMaxMs = Math.max(duringFreezesMaxMs, ms);
    const bound = w.committedAt + FREEZE_LATENCY_BOUND_MS;
    if (others.some((f) => f.start <= bound && f.end >= w.committedAt)) continue;
    judged += 1;
    judgedMaxMs = Math.max(judgedMaxMs, ms);
    if (ms > FREEZE_LATENCY_BOUND_MS) late.push({ w, ms, freeze });
  }
  if (late.length > 0) {
    const worst = late.reduce((a, b) => (b.ms > a.ms ? b : a));
    violations.push(
      `latency: ${late.length} message(s) committed during a freeze arrived more than ${FREEZE_LATENCY_BOUND_MS} ms after their commit, the longest ${worst.ms} ms (${worst.w.id}, key ${worst.w.key ?? 'none'}; freeze of ${worst.freeze.detail})`,
    );
  }
  latencies.sort((a, b) => a - b);
  return {
    maxMs: slowestMs,
    maxCommittedAt: slowest?.committedAt ?? 0,
    p99Ms: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? 0,
    duringFreezes,
    duringFreezesMaxMs,
    judged,
    judgedMaxMs,
  };
}
