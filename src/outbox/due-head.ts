import { DUE, PENDING } from './sql';

/**
 * How many rows due since '-infinity' the lag reads to find the oldest created_at among
 * them (their index entries are all equal). Exact while fewer are pending; above it, the
 * oldest of the first this many in index order. Reading 1,000 rows costs about 1 ms.
 */
export const FOREVER_DUE_SCAN_LIMIT = 1_000;

/**
 * Two CTEs, the heads of the due rows in messages_pending_due_idx: `finite_head`, the
 * row with the oldest finite due instant (one probe), and `forever_head`, rows due since
 * '-infinity' (available_at '-infinity', no retry yet), at most FOREVER_DUE_SCAN_LIMIT of
 * them. Those have no instant at which they became due: the lag counts them from their
 * created_at, so such a row neither makes the lag infinite nor hides an older overdue row.
 */
export function dueHeadsCte(table: string): string {
  return `finite_head AS (
         SELECT message_id, created_at, ${DUE} AS due_at FROM ${table}
          WHERE ${PENDING} AND ${DUE} > '-infinity' AND ${DUE} <= now()
          ORDER BY ${DUE} LIMIT 1),
       forever_head AS (
         SELECT message_id, created_at, ${DUE} AS due_at FROM ${table}
          WHERE ${PENDING} AND ${DUE} = '-infinity' LIMIT ${FOREVER_DUE_SCAN_LIMIT})`;
}

/**
 * The lag in seconds over the CTEs of `dueHeadsCte`: from the oldest finite due instant or
 * the oldest finite created_at of a row due since '-infinity', whichever is older; null
 * when neither exists (a created_at of ±infinity, written by hand, is left out).
 */
export const LAG_SECONDS = `EXTRACT(EPOCH FROM now() - LEAST(
         (SELECT due_at FROM finite_head),
         (SELECT min(created_at) FROM forever_head WHERE isfinite(created_at))))::float8`;

/**
 * Over the CTEs of `dueHeadsCte`: the columns `lag_seconds` (null when nothing is due)
 * and `head_message_id`, the message at the head of the due order (what the stall check
 * watches), null when nothing is due. Two index probes, however large the backlog.
 */
export const HEAD_COLUMNS = `CASE WHEN EXISTS (SELECT 1 FROM finite_head) OR EXISTS (SELECT 1 FROM forever_head)
            THEN GREATEST(${LAG_SECONDS}, 0) END AS lag_seconds,
       COALESCE((SELECT message_id FROM forever_head LIMIT 1), (SELECT message_id FROM finite_head))::text AS head_message_id`;
