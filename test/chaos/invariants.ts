import type { Pool } from 'pg';
import type { Fault } from './faults';
import { commitLatencies, type LatencyFigures } from './latency';
import type { Written } from './producers';
import { PUBLISH_TIMEOUT_MS } from './relays';

/** One delivery the independent consumer recorded, in arrival order. */
export interface Delivery {
  readonly id: string;
  readonly at: number;
}

/** Everything a run wrote and received, and the state it ended in. */
export interface RunRecord {
  /**
   * Committed messages, poison ones excluded. A producer's commit of unknown outcome (its
   * connection died during COMMIT: `--pg-failover`) is here when the database holds its
   * row at the end, in `rolledBack` otherwise (producers.ts, resolveUnknownCommits).
   */
  readonly good: readonly Written[];
  readonly rolledBack: readonly string[];
  readonly poisonIds: readonly string[];
  readonly deliveries: readonly Delivery[];
  readonly faults: readonly Fault[];
  /** Relays not ready at the end: each one's index and what its /readyz answered. */
  readonly notReady: readonly string[];
}

/** The counts the invariants are checked on (each should be 0). */
export interface InvariantCounts {
  readonly lost: number;
  readonly rolledBackDelivered: number;
  readonly orderViolations: number;
  readonly duplicates: number;
  readonly unexplainedDuplicates: number;
  readonly poisonNotDead: number;
  readonly othersDead: number;
  readonly lockedOrHalfMarked: number;
  /** Commit → first arrival: not a count, the figures of the run (a late message during a freeze is a violation). */
  readonly latency: LatencyFigures;
}

/**
 * Checks every invariant over what was written and received and over the outbox rows
 * (the relays stopped): nothing committed lost, nothing rolled back delivered, per-key
 * order kept, every duplicate explained by a fault, poison and only poison dead, no row
 * locked or half-marked, every relay ready, every message committed during a freeze at
 * the consumer within 10 s (latency.ts). Each broken one is added to `violations`.
 */
export async function checkInvariants(admin: Pool, schema: string, run: RunRecord, violations: string[]): Promise<InvariantCounts> {
  const { good, rolledBack, poisonIds, deliveries, faults, notReady } = run;
  const firstAt = new Map<string, number>();
  // Order is judged by arrival position, not by time: consecutive messages of a key published
  // in one batch arrive within the same millisecond, and a tie would fall back to the order in
  // which the producers' commits returned, which is not their order.
  const firstPosition = new Map<string, number>();
  const copies = new Map<string, number>();
  deliveries.forEach((d, position) => {
    if (!firstAt.has(d.id)) {
      firstAt.set(d.id, d.at);
      firstPosition.set(d.id, position);
    }
    copies.set(d.id, (copies.get(d.id) ?? 0) + 1);
  });
  const lost = good.filter((w) => !firstAt.has(w.id));
  const latency = commitLatencies(good, firstAt, faults, violations);
  const rolledBackDelivered = rolledBack.filter((id) => firstAt.has(id));
  let orderViolations = 0;
  const byKey = new Map<string, Written[]>();
  for (const w of good) if (w.key) byKey.set(w.key, [...(byKey.get(w.key) ?? []), w]);
  for (const [key, messages] of byKey) {
    const arrived = messages
      .filter((m) => firstPosition.has(m.id))
      .sort((a, b) => (firstPosition.get(a.id) as number) - (firstPosition.get(b.id) as number));
    for (let i = 1; i < arrived.length; i += 1) {
      if ((arrived[i] as Written).version < (arrived[i - 1] as Written).version) {
        orderViolations += 1;
        if (orderViolations <= 5)
          violations.push(
            `order: key ${key} version ${(arrived[i] as Written).version} first arrived after ${(arrived[i - 1] as Written).version}`,
          );
      }
    }
  }
  let duplicates = 0;
  let unexplained = 0;
  for (const [id, n] of copies) {
    if (n < 2) continue;
    duplicates += n - 1;
    const at = firstAt.get(id) as number;
    const explained = faults.some((f) => f.kind !== 'poison' && at >= f.start - 2_000 && at <= f.end + PUBLISH_TIMEOUT_MS + 3_000);
    if (!explained) {
      unexplained += n - 1;
      if (unexplained <= 5) violations.push(`duplicate of ${id} (first at ${new Date(at).toISOString()}) is explained by no fault`);
    }
  }
  const state = await admin.query<{ poison_not_dead: string; others_dead: string; half: string; unpublished: string }>(
    `SELECT count(*) FILTER (WHERE message_id = ANY($1::uuid[]) AND dead_at IS NULL) AS poison_not_dead,
            count(*) FILTER (WHERE NOT (message_id = ANY($1::uuid[])) AND dead_at IS NOT NULL) AS others_dead,
            count(*) FILTER (WHERE published_at IS NOT NULL AND dead_at IS NOT NULL) AS half,
            count(*) FILTER (WHERE NOT (message_id = ANY($1::uuid[])) AND published_at IS NULL) AS unpublished
       FROM "${schema}".messages`,
    [poisonIds],
  );
  const locked = await admin.query<{ n: string }>(
    `SELECT (SELECT count(*) FROM "${schema}".messages) - (SELECT count(*) FROM (SELECT 1 FROM "${schema}".messages FOR UPDATE SKIP LOCKED) AS free) AS n`,
  );
  const s = state.rows[0]!;
  const lockedOrHalfMarked = Number(locked.rows[0]?.n) + Number(s.half) + Number(s.unpublished);

  if (lost.length > 0)
    violations.push(
      `${lost.length} committed message(s) never delivered, e.g. ${lost
        .slice(0, 3)
        .map((w) => w.id)
        .join(', ')}`,
    );
  if (rolledBackDelivered.length > 0) violations.push(`${rolledBackDelivered.length} rolled-back message(s) delivered`);
  if (Number(s.poison_not_dead) > 0) violations.push(`${s.poison_not_dead} poison message(s) not dead`);
  if (Number(s.others_dead) > 0) violations.push(`${s.others_dead} good message(s) dead`);
  if (lockedOrHalfMarked > 0) violations.push(`${lockedOrHalfMarked} row(s) locked, half-marked or unpublished at the end`);
  if (notReady.length > 0) violations.push(`relay(s) ${notReady.join(', ')} not ready at the end`);

  return {
    lost: lost.length,
    rolledBackDelivered: rolledBackDelivered.length,
    orderViolations,
    duplicates,
    unexplainedDuplicates: unexplained,
    poisonNotDead: Number(s.poison_not_dead),
    othersDead: Number(s.others_dead),
    lockedOrHalfMarked,
    latency,
  };
}
