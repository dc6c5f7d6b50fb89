import type { Pool, PoolClient } from 'pg';
import { errorMessage } from '../errors';
import type { ReplayStore } from '../outbox/replay-store';

/**
 * One replay of a selection at a time: the lock of its normalised arguments, held in a
 * transaction of its own connection for as long as the replay runs (see
 * `ReplayStore.lockSelection`). Two identical replays started at once would otherwise both
 * create an entry and publish every message twice. A killed process's lock ends with its
 * connection.
 */
export class ReplayLock {
  private readonly lostController = new AbortController();
  private released = false;
  private readonly onError = (err: unknown): void => this.lose(`its connection failed: ${errorMessage(err)}`);
  private readonly onEnd = (): void => this.lose('its connection ended');

  private constructor(
    private readonly client: PoolClient,
    private readonly store: ReplayStore,
  ) {
    client.on('error', this.onError);
    client.on('end', this.onEnd);
  }

  private lose(why: string): void {
    if (this.released || this.lostController.signal.aborted) return;
    this.lostController.abort(`the lock of this replay ended: ${why}`);
  }

  /** Takes the lock of `selection`; undefined when another process holds it. */
  static async take(pool: Pool, store: ReplayStore, selection: string): Promise<ReplayLock | undefined> {
    const client = await pool.connect();
    let locked = false;
    try {
      locked = await store.lockSelection(client, selection);
    } finally {
      if (!locked) client.release();
    }
    return locked ? new ReplayLock(client, store) : undefined;
  }

  /**
   * Aborted (its reason says why) when the lock is lost with its connection: the replay
   * then stops after the chunk in flight, as it does on Ctrl-C, since another process
   * could now start the same replay.
   */
  get lost(): AbortSignal {
    return this.lostController.signal;
  }

  /** Ends the lock's transaction and gives the connection back (a broken one is discarded). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.client.off('error', this.onError);
    this.client.off('end', this.onEnd);
    try {
      await this.store.unlockSelection(this.client);
      this.client.release();
    } catch (err: unknown) {
      this.client.release(err instanceof Error ? err : true);
    }
  }
}
