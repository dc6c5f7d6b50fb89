import { hasExpired, type KeyRow, type KeyWindow, type OutboxMessage, type ParkOrder } from '../domain/message';

/**
 * Per-key ordering (see docs/ordering.md), as a pure function of what one claim saw.
 *
 * A claim locks up to a batch of due rows in due order. For every key among
 * them the store then reads that key's unpublished rows in id order, up to the last
 * claimed one. A keyed message may be published in this batch only if every earlier
 * unpublished message of its key is published before it in the same batch: the batch's
 * rows of a key must form a prefix ("run") of the key's unpublished rows. The first
 * unpublished row of the key that is NOT in the batch is the blocker, and every claimed
 * row after it waits:
 * - blocker waiting for its retry or its available_at: the claimed rows behind it are
 *   parked until the blocker is due, so later claims do not scan them again (this is
 *   what keeps a failing head of a long backlog from making every claim slower);
 * - blocker dead under OUTBOX_ORDERING_ON_DEAD=block: parked until an operator
 *   retries or discards it;
 * - blocker due but not claimed (in flight on another relay, or just past this window):
 *   held — released at commit and claimed again shortly.
 * A message that failed before (attempts > 0) is published alone, without the rest of
 * its key behind it, so a message that keeps failing cannot drag its successors along.
 * A message whose expires_at has passed (`nowMs`) goes to `publish` whatever is ahead of
 * it: it is never sent, only marked expired, which changes no order — and a row claimed
 * at its expiry must leave the pending rows, or it would be claimed again and again.
 */

export interface BatchPlan {
  /** To publish, in id order (so each key's run goes out in insertion order). */
  readonly publish: OutboxMessage[];
  /** Claimed rows that must wait for a blocker that is not due. */
  readonly park: ParkOrder[];
  /** The blocker (id) each parked row waits behind, by the parked row's id. */
  readonly parkedBehind: ReadonlyMap<string, string>;
  /** Claimed rows that wait for a blocker in flight elsewhere (released at commit). */
  readonly keptBack: number;
  /**
   * Blockers that are due but were not claimed: in flight elsewhere, or outside this
   * claim's window (a later message of the key became due earlier, e.g. an older
   * `available_at`). The batch tries to claim them too, so such rows never fill every
   * claim while their blocker waits behind them.
   */
  readonly dueBlockers: string[];
}

/** bigint ids arrive as decimal strings; compare them as numbers. */
export function compareIds(a: string, b: string): number {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}

/** What the ordering check must read: per key, the last claimed id and how many were claimed. */
export function keysToCheck(claimed: readonly OutboxMessage[]): KeyWindow[] {
  const byKey = new Map<string, { key: string; maxId: string; count: number }>();
  for (const m of claimed) {
    if (m.partitionKey === null) continue;
    const entry = byKey.get(m.partitionKey);
    if (!entry) byKey.set(m.partitionKey, { key: m.partitionKey, maxId: m.id, count: 1 });
    else {
      entry.count += 1;
      if (compareIds(m.id, entry.maxId) > 0) entry.maxId = m.id;
    }
  }
  return [...byKey.values()];
}

export function planBatch(claimed: readonly OutboxMessage[], keyRows: readonly KeyRow[], nowMs = Date.now()): BatchPlan {
  const publish: OutboxMessage[] = [];
  const park: ParkOrder[] = [];
  const parkedBehind = new Map<string, string>();
  let keptBack = 0;
  const dueBlockers = new Set<string>();
  const claimedByKey = new Map<string, OutboxMessage[]>();
  for (const m of claimed) {
    if (m.partitionKey === null) publish.push(m);
    else {
      const list = claimedByKey.get(m.partitionKey);
      if (list) list.push(m);
      else claimedByKey.set(m.partitionKey, [m]);
    }
  }
  const rowsByKey = new Map<string, KeyRow[]>();
  for (const row of keyRows) {
    const list = rowsByKey.get(row.key);
    if (list) list.push(row);
    else rowsByKey.set(row.key, [row]);
  }

  for (const [key, mine] of claimedByKey) {
    const byId = new Map(mine.map((m) => [m.id, m]));
    const rows = (rowsByKey.get(key) ?? []).slice().sort((a, b) => compareIds(a.id, b.id));
    const inRun = new Set<string>();
    let blocker: KeyRow | undefined;
    let runClosed = false;
    for (const row of rows) {
      const message = byId.get(row.id);
      if (!message) {
        blocker = row;
        break;
      }
      if (runClosed) break;
      const first = inRun.size === 0;
      if (!first && message.attempts > 0) break;
      inRun.add(row.id);
      if (first && message.attempts > 0) runClosed = true;
    }
    for (const m of mine) {
      if (inRun.has(m.id) || hasExpired(m, nowMs)) {
        publish.push(m);
      } else if (blocker && compareIds(m.id, blocker.id) > 0) {
        // A blocker parked behind a dead message is due at 'infinity' (not a Date).
        if (blocker.dead || (blocker.waiting && !Number.isFinite(new Date(blocker.due).getTime()))) {
          park.push({ id: m.id, until: { forever: true } });
          parkedBehind.set(m.id, blocker.id);
        } else if (blocker.waiting) {
          park.push({ id: m.id, until: { at: blocker.due } });
          parkedBehind.set(m.id, blocker.id);
        } else {
          keptBack += 1;
          dueBlockers.add(blocker.id);
        }
      } else {
        // Behind a message of this batch that goes out alone (it failed before).
        keptBack += 1;
      }
    }
  }
  publish.sort((a, b) => compareIds(a.id, b.id));
  return { publish, park, parkedBehind, keptBack, dueBlockers: [...dueBlockers] };
}
