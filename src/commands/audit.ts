import type { Config } from '../config/load-config';
import { verifySchemaOf } from '../db/migrator';
import type { Logger } from '../observability/logger';
import { AuditLog, type AuditEntry } from '../outbox/audit';
import { escapeControls } from '../util/terminal-text';
import type { Io } from './io';
import { withDatabase } from './with-database';

/** How many message ids a text line of `audit` shows before "… and N more". */
export const AUDIT_IDS_SHOWN = 3;

/**
 * `outbox-relay audit [--json] [--limit N]`: the operator actions recorded in
 * `<schema>.audit`, newest first. Text: one line per entry; JSON: one array.
 */
export async function auditCommand(config: Config, log: Logger, io: Io, options: { json?: boolean; limit: number }): Promise<void> {
  const audit = new AuditLog(config.schema);
  const entries = await withDatabase(config, log, async (pool) => {
    await verifySchemaOf(pool, config.schema);
    return audit.list(pool, options.limit);
  });
  if (options.json) {
    io.out(JSON.stringify(entries));
    return;
  }
  if (entries.length === 0) {
    io.out('no audit entries');
    return;
  }
  for (const entry of entries) io.out(auditLine(entry));
}

/** One entry on one line: time, role, command, count, arguments, the first ids; a replay's progress. */
export function auditLine(entry: AuditEntry): string {
  const shown = entry.messageIds.slice(0, AUDIT_IDS_SHOWN);
  // The count, not the ids kept, says how many there were (an entry keeps at most AUDIT_MAX_IDS).
  const more = entry.count - shown.length;
  const ids = shown.length === 0 ? 'ids -' : `ids ${shown.join(', ')}${more > 0 ? ` … and ${more} more` : ''}`;
  const parts = [
    entry.at.toISOString(),
    `role=${escapeControls(entry.role)}`,
    entry.command,
    `count=${entry.count}`,
    `args=${JSON.stringify(entry.arguments)}`,
    ids,
  ];
  if (entry.command === 'replay') {
    parts.push(`cursor=${entry.replayCursor ?? '-'}`, entry.finishedAt ? `finished ${entry.finishedAt.toISOString()}` : 'unfinished');
  }
  return parts.join('  ');
}
