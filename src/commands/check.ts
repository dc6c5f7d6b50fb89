import { connect } from 'amqplib';
import { TopologyProbe } from '../broker/topology';
import type { Config } from '../config/load-config';
import { redactUrl } from '../config/redact';
import { verifySchemaOf } from '../db/migrator';
import { quoteIdent } from '../db/sql';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { StatusStore } from '../outbox/status-store';
import { missingAuditPrivileges, missingPrivileges } from '../outbox/privileges';
import { firstThatAnswers } from '../util/first-answer';
import { escapeControls } from '../util/terminal-text';
import type { Io } from './io';
import { withDatabase } from './with-database';

interface CheckLine {
  readonly ok: boolean;
  readonly text: string;
}

/**
 * `outbox-relay check`: database reachable, schema version, privileges, broker
 * reachable, and every exchange named by a pending message exists. One line per
 * check; fails (exit 1) if any check fails.
 */
export async function checkCommand(config: Config, log: Logger, io: Io): Promise<void> {
  const lines: CheckLine[] = [];
  const report = (ok: boolean, text: string): void => {
    lines.push({ ok, text });
    io.out(`${ok ? 'ok  ' : 'FAIL'}  ${escapeControls(text)}`);
  };
  let exchanges: string[] | undefined;
  try {
    await withDatabase(config, log, async (pool) => {
      const { rows } = await pool.query<{ version: string; user: string }>(
        `SELECT current_setting('server_version') AS version, current_user AS user`,
      );
      report(true, `database reachable (PostgreSQL ${rows[0]?.version}, role ${rows[0]?.user})`);
      try {
        const version = await verifySchemaOf(pool, config.schema);
        report(true, `schema "${config.schema}" at migration ${version}`);
      } catch (err: unknown) {
        report(false, errorMessage(err));
        return;
      }
      const missing = await missingPrivileges(pool, config.schema);
      report(
        missing.length === 0,
        missing.length === 0
          ? `role may claim, mark and delete in ${quoteIdent(config.schema)}.messages and coordinate with the other replicas (relay_lease, relay_replicas)`
          : `role lacks ${missing.join(', ')}`,
      );
      const missingAudit = await missingAuditPrivileges(pool, config.schema);
      report(
        missingAudit.length === 0,
        missingAudit.length === 0
          ? `role may read and write the audit trail ${quoteIdent(config.schema)}.audit`
          : `role lacks ${missingAudit.join(', ')} (the audit trail of dead retry, dead discard and replay)`,
      );
      if (missing.length === 0) exchanges = await new StatusStore(config.schema).pendingExchanges(pool);
    });
  } catch (err: unknown) {
    report(false, errorMessage(err));
  }

  let brokerOk = false;
  await firstThatAnswers(
    config.amqpUrls,
    async (url) => {
      const model = await connect(url, { timeout: 5_000 });
      try {
        brokerOk = true;
        report(true, `broker reachable (${redactUrl(url)})`);
        if (exchanges) {
          const missing = [...(await new TopologyProbe(() => model.createChannel()).missing('exchange', exchanges))];
          report(
            missing.length === 0,
            missing.length === 0
              ? `all ${exchanges.length} exchange(s) named by pending messages exist`
              : `exchange(s) named by pending messages do not exist: ${missing.map((e) => `"${e}"`).join(', ')}`,
          );
        }
      } finally {
        await model.close().catch(() => undefined);
      }
    },
    (url, err) => report(false, `broker not reachable at ${redactUrl(url)}: ${errorMessage(err)}`),
  );
  if (!brokerOk || lines.some((l) => !l.ok && !l.text.startsWith('broker not reachable'))) {
    const failed = lines.filter((l) => !l.ok).length;
    throw new OutboxError('CHECK_FAILED', `${failed} check${failed === 1 ? '' : 's'} failed`);
  }
}
