import type { Config } from '../config/load-config';
import type { Logger } from '../observability/logger';
import { auditRetentionMs, cleanupOnce } from '../outbox/retention';
import type { Io } from './io';
import { withDatabase } from './with-database';

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

/** `outbox-relay cleanup`: the retention cleanup, once (messages, then audit entries). */
export async function cleanupCommand(config: Config, log: Logger, io: Io): Promise<void> {
  const report = await withDatabase(config, log, (pool) => cleanupOnce(pool, config.schema, config.retentionMs));
  if (report === undefined) {
    io.out('another relay is cleaning right now; nothing done');
    return;
  }
  // The counts of expired messages and audit entries only when there were any: the line stays what it was before expiry and the audit.
  const expired = report.expired > 0 ? ` and ${plural(report.expired, 'expired message', 'expired messages')}` : '';
  const audit =
    report.auditEntries > 0
      ? `, and ${plural(report.auditEntries, 'audit entry', 'audit entries')} older than ${
          config.retentionMs > 0 ? 'OUTBOX_RETENTION' : `${auditRetentionMs(0) / 86_400_000} days (OUTBOX_RETENTION is 0)`
        }`
      : '';
  io.out(`deleted ${plural(report.published, 'published message', 'published messages')}${expired} older than OUTBOX_RETENTION${audit}`);
  if (report.auditError !== undefined) {
    io.err(`outbox-relay: cannot delete old audit entries: ${report.auditError} (grant DELETE on the audit table; see outbox-relay check)`);
  }
}
