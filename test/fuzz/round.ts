import type { ConsumeMessage } from 'amqplib';
import { OutboxFixture } from '../kit/outbox-fixture';
import { endpointStatus, readMetrics } from '../kit/relay-http';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { reasonOf, sortKeys } from './compare';
import { insert } from './insert';
import { jsonText, safeForComparison, type FuzzRow } from './rows';

/** What one round saw; the fuzz run adds them up. */
export interface RoundReport {
  readonly generated: number;
  /** Generated rows the table refused at INSERT (its constraints), so never in the outbox. */
  readonly refused: number;
  readonly published: number;
  readonly dead: number;
  /** Dead rows by the class of their stored error. */
  readonly deadBy: Record<string, number>;
  readonly goodInserted: number;
  readonly goodDelivered: number;
  /** Deliveries beyond the first of one message id. */
  readonly duplicates: number;
  /** Longest commit → delivery of a good message that shares its key with a generated row (ms). */
  readonly longestGoodWaitMs: number;
  /** Times /readyz said 200 while the relay's outbox_stalled said 1, or due messages sat still past the stall timeout. */
  readonly healthyWhileStalled: number;
  readonly violations: string[];
}

const STALL_TIMEOUT_MS = 3_000;
const QUIET_MS = 1_500;

/**
 * One round: a fresh schema, exchange and queue; the generated rows with good messages
 * between them; one relay; then every invariant checked against what arrived.
 */
export async function runRound(rows: readonly FuzzRow[], options: { goodPerRow?: number } = {}): Promise<RoundReport> {
  const fx = await OutboxFixture.create('fuzz');
  const broker = await TestBroker.connect();
  const violations: string[] = [];
  try {
    const exchange = await broker.exchange(uniqueName('fuzz'), 'fanout');
    const queue = uniqueName('fuzzq');
    const received = await broker.queue(queue, { exchange, pattern: '#' });
    const arrivals = new Map<string, number>();
    const goodPerRow = options.goodPerRow ?? 3;
    const plan: (FuzzRow | undefined)[] = [];
    for (const row of rows) {
      plan.push(row);
      for (let i = 0; i < goodPerRow; i += 1) plan.push(undefined);
    }
    const inserted = await insert(fx.pool, fx.table, plan, exchange, queue);
    const byMessageId = new Map(inserted.map((m) => [m.messageId, m]));
    const { relay, logs } = await fx.startRelay({
      OUTBOX_MAX_ATTEMPTS: '2',
      OUTBOX_BACKOFF_BASE_MS: '10',
      OUTBOX_BACKOFF_MAX_MS: '50',
      OUTBOX_BATCH_SIZE: '50',
      OUTBOX_STALL_TIMEOUT_MS: String(STALL_TIMEOUT_MS),
      OUTBOX_UNROUTABLE: 'publish',
    });

    // Until nothing due is left (the 'infinity' rows never are), watching health meanwhile.
    let healthyWhileStalled = 0;
    let lastChange = Date.now();
    let lastSeen = '';
    const deadline = Date.now() + 60_000;
    for (;;) {
      for (const msg of received.splice(0)) {
        const id = String(msg.properties.messageId);
        arrivals.set(id, arrivals.get(id) ?? Date.now());
        (received as unknown as { seen?: ConsumeMessage[] }).seen ??= [];
        (received as unknown as { seen: ConsumeMessage[] }).seen.push(msg);
      }
      const { rows: due } = await fx.pool.query<{ due: string; dead: string; published: string }>(
        `SELECT count(*) FILTER (WHERE published_at IS NULL AND dead_at IS NULL AND GREATEST(available_at, next_attempt_at) <= now()) AS due,
                count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead, count(*) FILTER (WHERE published_at IS NOT NULL) AS published
           FROM ${fx.table}`,
      );
      const state = `${due[0]!.due}/${due[0]!.dead}/${due[0]!.published}/${arrivals.size}`;
      if (state !== lastSeen) {
        lastSeen = state;
        lastChange = Date.now();
      }
      const ready = (await endpointStatus(relay.port, '/readyz')) === 200;
      const stalledGauge = (await readMetrics(relay.port)).value('outbox_stalled');
      if (ready && stalledGauge === 1) healthyWhileStalled += 1;
      const pendingDue = Number(due[0]!.due);
      // Pending messages with a retry coming count as due; a still table past the stall timeout must not look healthy.
      if (ready && pendingDue > 0 && Date.now() - lastChange > STALL_TIMEOUT_MS + 3_000) healthyWhileStalled += 1;
      if (pendingDue === 0 && Date.now() - lastChange > QUIET_MS) break;
      if (Date.now() > deadline) {
        const lastWarnings = logs.lines.filter((l) => /"level":"(warn|error)"/.test(l)).slice(-8);
        violations.push(
          `not drained within 60 s: ${state} (due/dead/published/arrived); last warnings:\n    ${lastWarnings.join('\n    ')}`,
        );
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const seen = (received as unknown as { seen?: ConsumeMessage[] }).seen ?? [];

    const { rows: table } = await fx.pool.query<{
      message_id: string;
      published: boolean;
      dead: boolean;
      last_error: string | null;
      content: Buffer;
    }>(
      `SELECT message_id, published_at IS NOT NULL AS published, dead_at IS NOT NULL AS dead, last_error,
              COALESCE(body, convert_to(payload::text, 'UTF8')) AS content
         FROM ${fx.table}`,
    );
    const contentOf = new Map(table.map((r) => [r.message_id, r.content]));
    // A row due at 'infinity' waits for ever, and so, by the ordering contract, does every later message of its key.
    const heldForEver = new Set<string>();
    const waitingKeys = new Set<string>();
    for (const m of [...inserted].sort((a, b) => (a.id < b.id ? -1 : 1))) {
      if (m.key !== null && waitingKeys.has(m.key)) heldForEver.add(m.messageId);
      if (m.row?.availableAt === 'infinity') {
        heldForEver.add(m.messageId);
        if (m.key !== null) waitingKeys.add(m.key);
      }
    }
    const deadBy: Record<string, number> = {};
    let published = 0;
    let dead = 0;
    for (const r of table) {
      const m = byMessageId.get(r.message_id)!;
      if (heldForEver.has(r.message_id)) {
        if (r.published || r.dead) violations.push(`message ${r.message_id} behind a row due at infinity was handled`);
        continue;
      }
      if (m.row === undefined) {
        if (!r.published) violations.push(`good message ${r.message_id} not published (${r.last_error ?? 'no error'})`);
        continue;
      }
      if (r.published) published += 1;
      if (r.dead) {
        dead += 1;
        const reason = reasonOf(r.last_error ?? '(no error stored)');
        deadBy[reason] = (deadBy[reason] ?? 0) + 1;
        if (!r.last_error) violations.push(`dead row ${r.message_id} without an error`);
      }
      if (!r.published && !r.dead) violations.push(`row ${r.message_id} neither published nor dead`);
      const tooLong = [
        m.row.messageType,
        m.row.correlationId,
        m.row.contentType,
        m.row.routingKey.kind === 'text' ? m.row.routingKey.text : null,
      ]
        .concat(m.row.exchange.kind === 'missing' ? [m.row.exchange.name] : [])
        .some((v) => v !== null && v !== undefined && Buffer.byteLength(v) > 255);
      if (tooLong && r.published) violations.push(`row ${r.message_id} with a field over 255 bytes was published`);
      if (tooLong && r.dead && !/bytes/.test(r.last_error ?? ''))
        violations.push(`row ${r.message_id}: error does not name the byte limit: ${r.last_error}`);
    }

    // What arrived: exactly what was inserted, each once, keys in order.
    let duplicates = 0;
    const counts = new Map<string, number>();
    for (const msg of seen) counts.set(String(msg.properties.messageId), (counts.get(String(msg.properties.messageId)) ?? 0) + 1);
    for (const n of counts.values()) duplicates += n - 1;
    const firstSeen = [...new Map(seen.map((m) => [String(m.properties.messageId), m])).values()];
    const lastByKey = new Map<string, bigint>();
    let longestGoodWaitMs = 0;
    const badKeys = new Set(inserted.filter((m) => m.row !== undefined && m.key !== null).map((m) => m.key));
    for (const msg of firstSeen) {
      const m = byMessageId.get(String(msg.properties.messageId));
      if (!m) {
        violations.push(`unknown message ${String(msg.properties.messageId)} arrived`);
        continue;
      }
      if (m.key !== null) {
        const last = lastByKey.get(m.key);
        if (last !== undefined && last > m.id) violations.push(`key ${JSON.stringify(m.key).slice(0, 40)}: message ${m.id} after ${last}`);
        lastByKey.set(m.key, m.id);
      }
      if (m.row === undefined) {
        if (JSON.stringify(JSON.parse(msg.content.toString())) !== JSON.stringify({ good: m.goodIndex })) {
          violations.push(`good message ${m.messageId} arrived changed`);
        }
        if (m.key !== null && badKeys.has(m.key))
          longestGoodWaitMs = Math.max(longestGoodWaitMs, (arrivals.get(m.messageId) ?? 0) - m.committedAt);
        continue;
      }
      const row = m.row;
      if (!msg.content.equals(contentOf.get(m.messageId) ?? Buffer.alloc(0))) violations.push(`row ${m.messageId}: body changed`);
      if ((msg.properties.type ?? null) !== row.messageType) violations.push(`row ${m.messageId}: type changed`);
      if ((msg.properties.correlationId ?? null) !== row.correlationId) violations.push(`row ${m.messageId}: correlation id changed`);
      if (msg.properties.contentType !== (row.contentType ?? 'application/json'))
        violations.push(`row ${m.messageId}: content type changed`);
      if (safeForComparison(row.headers)) {
        // The row's headers, and the relay's key and position in place of any of those names in the row.
        const own = JSON.parse(jsonText(row.headers)) as Record<string, unknown>;
        delete own['x-outbox-partition-key'];
        delete own['x-outbox-position'];
        const expected = { ...own, ...(m.key === null ? {} : { 'x-outbox-partition-key': m.key }), 'x-outbox-position': Number(m.id) };
        const actual = (msg.properties.headers ?? {}) as unknown;
        if (JSON.stringify(sortKeys(actual)) !== JSON.stringify(sortKeys(expected))) violations.push(`row ${m.messageId}: headers changed`);
      }
    }
    const arrived = new Set(firstSeen.map((msg) => String(msg.properties.messageId)));
    for (const r of table)
      if (r.published && !arrived.has(r.message_id)) violations.push(`message ${r.message_id} marked published but never arrived`);
    const goodInserted = inserted.filter((m) => m.row === undefined && !heldForEver.has(m.messageId)).length;
    const goodDelivered = firstSeen.filter((msg) => byMessageId.get(String(msg.properties.messageId))?.row === undefined).length;
    if (goodDelivered !== goodInserted) violations.push(`good messages delivered ${goodDelivered} of ${goodInserted}`);
    if (duplicates > 0) violations.push(`${duplicates} duplicate deliveries`);
    if (healthyWhileStalled > 0) violations.push(`healthy while stalled ${healthyWhileStalled} time(s)`);

    const metrics = await readMetrics(relay.port);
    const publishedTotal = metrics.value('outbox_messages_published_total');
    const publishedRows = table.filter((r) => r.published).length;
    if (publishedTotal !== publishedRows)
      violations.push(`outbox_messages_published_total ${publishedTotal}, published rows ${publishedRows}`);
    return {
      generated: rows.length,
      refused: rows.length - inserted.filter((m) => m.row !== undefined).length,
      published,
      dead,
      deadBy,
      goodInserted,
      goodDelivered,
      duplicates,
      longestGoodWaitMs,
      healthyWhileStalled,
      violations,
    };
  } finally {
    await broker.close();
    await fx.close();
  }
}
