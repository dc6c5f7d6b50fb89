import type { OutboxMessage } from '../domain/message';
import { errorMessage } from '../errors';
import { hasSqlState, isOutage } from '../util/outage';

/**
 * A batch failed for a reason that is not a lost connection:
 * - `messages`: while handling its messages (reading, checking, encoding, publishing):
 *   some of the claimed messages caused it; the loop finds which by itself;
 * - `writes`: the relay's own statements on the outbox table failed (a missing
 *   privilege, a constraint, a trigger): no message is to blame.
 * The batch's transaction was rolled back.
 */
export class BatchFault extends Error {
  override readonly name = 'BatchFault';

  constructor(
    readonly phase: 'messages' | 'writes',
    readonly claimed: readonly OutboxMessage[],
    override readonly cause: unknown,
  ) {
    super(errorMessage(cause), { cause });
  }
}

/** Runs `work`; a failure that is not a lost connection becomes a BatchFault of `phase`. */
export async function inPhase<T>(phase: BatchFault['phase'], claimed: readonly OutboxMessage[], work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err: unknown) {
    if (err instanceof BatchFault || isOutage(err)) throw err;
    // The relay's own statements fail as PostgreSQL reports it, with an SQLSTATE (42501 a
    // missing privilege, 23xxx a constraint, P0001 a trigger); a driver error without one is
    // no verdict on the writes.
    if (phase === 'writes' && !hasSqlState(err)) throw err;
    throw new BatchFault(phase, claimed, err);
  }
}
