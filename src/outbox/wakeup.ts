import { randomUUID } from 'node:crypto';
import type { Client, Notification } from 'pg';
import { notifyChannel } from '../db/sql';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';
import { reconnectDelayMs } from '../util/backoff';
import { abortableDelay, Waiters } from '../util/delay';
import { TIMED_OUT, withDeadline } from '../util/deadline';
import { deferred } from '../util/deferred';

/** How long the LISTEN self-test waits for its own notification before giving up. */
const SELF_TEST_TIMEOUT_MS = 3_000;

/**
 * Wakes the relay's workers on a NOTIFY on `<schema>.messages` — from the optional
 * trigger (migrations/optional/notify-on-insert.sql) or a producer's own pg_notify —
 * and otherwise lets them sleep until their next peek (see relay/loop.ts).
 *
 * A dedicated connection LISTENs. After LISTEN it notifies itself once: if that
 * notification never arrives (a transaction-pooling PgBouncer swallows them), it says
 * so once in the log and the relay just polls. A lost listener connection is
 * re-established with backoff; meanwhile polling carries on, and every reconnect
 * wakes the workers once in case a notification was missed. With a multi-host URL the
 * connection goes where the pool's goes: after a failover it is lost (or dropped, when
 * its host turned read-only) and LISTENs again on the new primary.
 */
export class Wakeup {
  private generationCounter = 0;
  private readonly waiters = new Waiters();
  /** The LISTEN loop while listening (only the leading replica listens). */
  private listening: { readonly controller: AbortController; readonly done: Promise<void> } | undefined;
  /** LISTEN/NOTIFY was found not to reach this relay: said once, never tried again. */
  private unavailable = false;

  constructor(
    /** A new, unconnected client (db/pool.ts: with a multi-host URL, to the host the pool uses). */
    private readonly newClient: () => Client,
    private readonly schema: string,
    private readonly log: Logger,
  ) {}

  /** Increases on every notification; workers compare it to skip a sleep. */
  get generation(): number {
    return this.generationCounter;
  }

  /** Wakes every waiting worker now. */
  trigger(): void {
    this.generationCounter += 1;
    this.waiters.wakeAll();
  }

  /**
   * Sleeps up to `ms`, returning early on a notification, on abort, or at once when a
   * notification arrived since the caller saw `seenGeneration`.
   */
  wait(ms: number, signal: AbortSignal, seenGeneration: number): Promise<void> {
    if (this.generationCounter !== seenGeneration) return Promise.resolve();
    return abortableDelay(ms, signal, this.waiters.subscribe);
  }

  /** Starts listening in the background (idempotent); a no-op once LISTEN was found not to work here. */
  start(): void {
    if (this.listening || this.unavailable) return;
    const controller = new AbortController();
    this.listening = { controller, done: this.listenLoop(controller.signal) };
  }

  /** Stops listening (a replica that stops leading); waiters keep working on their timers. */
  async unlisten(): Promise<void> {
    const listening = this.listening;
    this.listening = undefined;
    if (!listening) return;
    listening.controller.abort();
    await listening.done;
  }

  private async listenLoop(signal: AbortSignal): Promise<void> {
    const channel = notifyChannel(this.schema);
    let failures = 0;
    while (!signal.aborted) {
      const client = this.newClient();
      const connectionLost = deferred();
      const lost = (): void => connectionLost.resolve();
      client.on('error', (err) => {
        this.log.debug({ err: errorMessage(err) }, 'LISTEN connection error');
        lost();
      });
      client.on('end', () => lost());
      try {
        await client.connect();
        let selfTestPayload: string | undefined = `self-test:${randomUUID()}`;
        const selfTestPassed = deferred();
        const selfTest = withDeadline(selfTestPassed.promise, SELF_TEST_TIMEOUT_MS);
        client.on('notification', (n: Notification) => {
          if (n.channel !== channel) return;
          if (selfTestPayload !== undefined && n.payload === selfTestPayload) {
            selfTestPayload = undefined;
            selfTestPassed.resolve();
            return;
          }
          this.trigger();
        });
        await client.query(`LISTEN ${client.escapeIdentifier(channel)}`);
        await client.query('SELECT pg_notify($1, $2)', [channel, selfTestPayload]);
        if ((await selfTest) === TIMED_OUT) {
          if (signal.aborted) return; // stopped meanwhile: the self-test proves nothing
          this.log.warn(
            { channel },
            'LISTEN/NOTIFY does not reach this relay (behind a transaction-pooling PgBouncer?): relying on peeking for new messages',
          );
          this.unavailable = true;
          await client.end().catch(() => undefined);
          return;
        }
        if (failures > 0) this.log.info({ channel }, 'listening for new messages again');
        else this.log.debug({ channel }, 'listening for new messages');
        failures = 0;
        this.trigger(); // anything committed while we were not listening
        const stopped = (): void => lost();
        signal.addEventListener('abort', stopped, { once: true });
        await connectionLost.promise;
        signal.removeEventListener('abort', stopped);
      } catch (err: unknown) {
        if (!signal.aborted) this.log.debug({ err: errorMessage(err) }, 'cannot LISTEN');
      } finally {
        await client.end().catch(() => undefined);
      }
      if (signal.aborted) return;
      failures += 1;
      if (failures === 1) this.log.warn('lost the LISTEN connection: polling until it is back');
      await abortableDelay(reconnectDelayMs(failures), signal);
    }
  }

  /** Stops listening and wakes every waiter. Idempotent. */
  async stop(): Promise<void> {
    const done = this.unlisten();
    this.waiters.wakeAll();
    await done;
  }
}
