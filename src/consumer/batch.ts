import type { ConsumeMessage } from 'amqplib';
import type { Client, PoolClient } from 'pg';
import { errorMessage } from '../errors';
import { databaseFault, sqlState } from '../util/outage';
import { deleteInboxRows, InboxUnavailable, insertInboxRows, type InboxTarget } from './inbox';
import type { InboxMessage } from './options';
import type { AttemptSpan, DeliveryTracing } from './tracing';

/** One delivery of a batch, admitted. */
export interface BatchItem<TPayload> {
  readonly messageId: string;
  /** Its partition key, with `ordered`; undefined: no order to keep. */
  readonly key: string | undefined;
  readonly msg: ConsumeMessage;
  readonly message: InboxMessage<TPayload>;
}

/**
 * What became of one delivery of a batch:
 * - `handled`: its handler ran and the batch committed;
 * - `duplicate`: its id was in the inbox already (committed by an earlier delivery);
 * - `failed`: its handler threw (or left its transaction aborted); its work rolled back;
 * - `deferred`: not run, because an earlier message of its key failed in this batch;
 * - `wait`: not its fault — the database away or the inbox unusable; nothing kept;
 * - `refused`: the database refused a value of this delivery (its message id);
 * - `alone`: the batch failed in a shared step for a reason no delivery could be blamed
 *   for yet; run it again in a batch of its own, to find out.
 */
export type BatchOutcome =
  | { readonly kind: 'handled' | 'duplicate' | 'deferred' | 'alone' }
  | { readonly kind: 'failed' | 'wait' | 'refused'; readonly error: unknown };

/** A savepoint per handler, under one name: each new one replaces the last, released. */
const SAVEPOINT = 'outbox_handler';
/** 25P02: the transaction is aborted (a handler caught an error of its own statement and went on). */
const IN_FAILED_TRANSACTION = '25P02';

class Abort extends Error {}

/**
 * Runs a batch in one transaction on one connection of the pool: BEGIN; the inbox rows
 * of all its messages in one statement; each new message's handler in order, inside its
 * own savepoint when the batch has more than one message (a handler that throws is
 * rolled back to its savepoint and its inbox row deleted; with `ordered`, the later
 * messages of its key in the batch are deferred); COMMIT. A batch of one runs without
 * savepoints: the round trips of a transaction per message, as without batching.
 *
 * Never throws: each delivery gets its outcome. The acks are the caller's, after this
 * returns, and only for `handled` and `duplicate`.
 */
export async function runBatch<TPayload>(
  target: InboxTarget<TPayload>,
  items: readonly BatchItem<TPayload>[],
  tracing: DeliveryTracing | undefined,
  ordered: boolean,
): Promise<BatchOutcome[]> {
  let client: PoolClient;
  try {
    client = await target.pool.connect();
  } catch (err: unknown) {
    const error = new InboxUnavailable(`cannot reach the inbox database: ${errorMessage(err)}`, { cause: err });
    return items.map(() => ({ kind: 'wait', error }));
  }
  target.checkedOut.add(client);
  let broken: Error | undefined;
  // The connection may drop while a handler runs no query: keep that from crashing the process.
  const onError = (err: Error): void => {
    broken = err;
  };
  client.on('error', onError);
  const spans = items.map((item) => tracing?.start(item.msg, item.message));
  const run = new BatchRun(target, client, items, spans, ordered);
  try {
    const outcomes = await run.execute();
    if (run.discard) broken ??= new Error('connection in an unknown state');
    items.forEach((_, index) => endSpan(spans[index], outcomes[index] as BatchOutcome));
    return outcomes;
  } finally {
    client.off('error', onError);
    // Not checked out any more: a shutdown past its timeout already dropped it.
    if (target.checkedOut.delete(client)) client.release(broken);
  }
}

function endSpan(span: AttemptSpan | undefined, outcome: BatchOutcome): void {
  if (span === undefined) return;
  if (outcome.kind === 'handled' || outcome.kind === 'duplicate') span.end(outcome.kind);
  else if ('error' in outcome) span.fail(outcome.error);
  else span.end('skipped');
}

/** One batch's transaction (see runBatch). */
class BatchRun<TPayload> {
  readonly outcomes: (BatchOutcome | undefined)[];
  /** The connection's state is unknown (a ROLLBACK failed): destroy it rather than reuse it. */
  discard = false;
  private readonly single: boolean;
  /** Inbox rows of messages not processed after all. */
  private readonly undo: string[] = [];
  private readonly failedKeys = new Set<string>();
  /** The index of the handler the open savepoint protects; -1: none. */
  private guarded = -1;

  constructor(
    private readonly target: InboxTarget<TPayload>,
    private readonly client: PoolClient,
    private readonly items: readonly BatchItem<TPayload>[],
    private readonly spans: readonly (AttemptSpan | undefined)[],
    private readonly ordered: boolean,
  ) {
    this.outcomes = items.map(() => undefined);
    this.single = items.length === 1;
  }

  async execute(): Promise<BatchOutcome[]> {
    try {
      // Not awaited before the insert: on a pool in pipeline mode both travel at once.
      let begin: Promise<unknown> = Promise.resolve(undefined);
      const insert = together(this.client, () => {
        begin = settledError(this.client.query('BEGIN'));
        return this.insertInbox(begin);
      });
      const fresh = await insert;
      for (const [index, item] of this.items.entries()) {
        if (!fresh.delete(item.messageId)) this.outcomes[index] = { kind: 'duplicate' };
        else if (this.ordered && item.key !== undefined && this.failedKeys.has(item.key)) this.notProcessed(index, { kind: 'deferred' });
        else await this.runHandler(index, item);
      }
      await this.commit();
      return this.outcomes.map((outcome) => outcome ?? { kind: 'handled' });
    } catch (err: unknown) {
      if (err instanceof Abort) return this.outcomes as BatchOutcome[];
      throw err;
    }
  }

  /** The inbox rows: a value the database refuses is the delivery's own failure (a batch of one), or found alone. */
  private async insertInbox(begin: Promise<unknown>): Promise<Set<string>> {
    let fresh: Set<string> | undefined;
    let failure: unknown;
    try {
      fresh = await insertInboxRows(
        this.client,
        this.target.table,
        this.target.name,
        this.items.map((item) => item.messageId),
      );
    } catch (err: unknown) {
      failure = err;
    }
    const beginError = await begin;
    if (beginError !== undefined) await this.lost(beginError);
    if (fresh !== undefined) return fresh;
    await this.rollback();
    if (databaseFault(failure) !== 'value') this.abortAll('wait', unavailable(failure));
    if (this.single) this.abortAll('refused', failure);
    this.abortAll('alone');
  }

  /**
   * Runs handler `index`; in a batch of several, inside a savepoint of its own (the last
   * one released in the same statement). The savepoint is sent ahead of the handler's
   * first statement without waiting for its answer: on a pool in pipeline mode
   * (`new Pool({ pipeline: true })`) both go out at once, one round trip instead of two;
   * otherwise the driver sends them one after the other, as if awaited.
   */
  private async runHandler(index: number, item: BatchItem<TPayload>): Promise<void> {
    const previous = this.guarded;
    let guard: Promise<unknown> = Promise.resolve(undefined);
    const work = (): Promise<void> => this.target.handler(item.message, this.client);
    const handled = together(this.client, () => {
      if (!this.single) {
        guard = settledError(
          this.client.query(previous < 0 ? `SAVEPOINT ${SAVEPOINT}` : `RELEASE SAVEPOINT ${SAVEPOINT}; SAVEPOINT ${SAVEPOINT}`),
        );
        this.guarded = index;
      }
      // Called inside: a handler's first statement, sent before its first await, leaves with the savepoint.
      try {
        return this.spans[index]?.run(work) ?? work();
      } catch (err: unknown) {
        return Promise.reject(err as Error);
      }
    });
    let failure: { error: unknown } | undefined;
    try {
      await handled;
    } catch (err: unknown) {
      failure = { error: err };
    }
    const guardError = await guard;
    if (guardError !== undefined) {
      // Refused as "in a failed transaction": the previous handler caught an error of its
      // own statement and returned. It failed, as if it had thrown; this one ran in the
      // aborted transaction (its statements refused) and runs again, alone.
      if (sqlState(guardError) !== IN_FAILED_TRANSACTION || previous < 0) await this.lost(guardError);
      this.guarded = previous;
      await this.statement(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
      this.handlerFailed(previous, swallowed(guardError));
      this.notProcessed(index, { kind: 'alone' });
      return;
    }
    if (failure === undefined) {
      this.outcomes[index] = { kind: 'handled' };
      return;
    }
    if (this.single) {
      // A rollback that fails says the connection went: nobody's attempt.
      if (!(await this.rollback())) this.abortAll('wait', unavailable(failure.error));
      this.abortAll('failed', failure.error);
    }
    await this.statement(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
    this.handlerFailed(index, failure.error);
  }

  /**
   * Releases the savepoint of the last handler, with `then` in the same round trip.
   * Refused as "in a failed transaction", it means that handler caught an error of its
   * own statement and returned: its work is rolled back and it failed, as if it had
   * thrown (returns true: `then` did not run).
   */
  private async releaseLast(then: string): Promise<boolean> {
    try {
      await this.client.query(`RELEASE SAVEPOINT ${SAVEPOINT}${then}`);
      return false;
    } catch (err: unknown) {
      if (sqlState(err) !== IN_FAILED_TRANSACTION) return await this.lost(err);
      await this.statement(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
      this.handlerFailed(this.guarded, swallowed(err));
      return true;
    } finally {
      this.guarded = -1;
    }
  }

  private handlerFailed(index: number, err: unknown): void {
    this.notProcessed(index, { kind: 'failed', error: err });
  }

  /** Its inbox row goes; under `ordered`, the later messages of its key in this batch wait (deferred). */
  private notProcessed(index: number, outcome: BatchOutcome): void {
    const item = this.items[index] as BatchItem<TPayload>;
    this.outcomes[index] = outcome;
    this.undo.push(item.messageId);
    if (item.key !== undefined) this.failedKeys.add(item.key);
  }

  /**
   * Releases the last savepoint, deletes the inbox rows of what was not processed, and
   * commits (release and commit in one round trip when nothing is to be deleted). A
   * COMMIT of an aborted transaction answers ROLLBACK without an error: a handler's
   * failure too (its caught error left the transaction aborted).
   */
  private async commit(): Promise<void> {
    if (this.guarded >= 0 && this.undo.length > 0) await this.releaseLast('');
    if (this.undo.length > 0) await this.statement(() => deleteInboxRows(this.client, this.target.table, this.target.name, this.undo));
    const releasing = this.guarded >= 0;
    let command: string | null | undefined;
    try {
      const result: unknown = await this.client.query(releasing ? `RELEASE SAVEPOINT ${SAVEPOINT}; COMMIT` : 'COMMIT');
      // Two statements in one query answer with a result each.
      command = (Array.isArray(result) ? (result.at(-1) as { command?: string }) : (result as { command?: string })).command;
    } catch (err: unknown) {
      if (releasing && sqlState(err) === IN_FAILED_TRANSACTION) {
        // The release failed, the commit did not run: the last handler left the transaction aborted.
        await this.statement(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
        this.handlerFailed(this.guarded, swallowed(err));
        this.guarded = -1;
        return this.commit();
      }
      // Whether it committed is unknown when the connection went: the messages come back, and the inbox knows.
      await this.rollback();
      if (databaseFault(err) === 'away') this.abortAll('wait', unavailable(err));
      if (this.single) this.abortAll('failed', err);
      this.abortAll('alone');
    }
    if (command === 'ROLLBACK') {
      if (this.single) this.abortAll('failed', swallowed(undefined));
      this.abortAll('alone');
    }
  }

  /** A statement of the consumer's own: when it fails, the connection is gone or unusable, and everything waits. */
  private async statement(run: string | (() => Promise<unknown>)): Promise<void> {
    try {
      await (typeof run === 'string' ? this.client.query(run) : run());
    } catch (err: unknown) {
      await this.lost(err);
    }
  }

  private async lost(err: unknown): Promise<never> {
    await this.rollback();
    this.abortAll('wait', unavailable(err));
  }

  /** False when even the ROLLBACK failed: the connection is in an unknown state, and destroyed. */
  private async rollback(): Promise<boolean> {
    try {
      await this.client.query('ROLLBACK');
      return true;
    } catch {
      this.discard = true;
      return false;
    }
  }

  /**
   * Ends the batch: every delivery without an outcome of its own (and, for `wait`,
   * every delivery: nothing of the batch was kept) gets `kind`.
   */
  private abortAll(kind: 'wait' | 'failed' | 'refused' | 'alone', error?: unknown): never {
    this.items.forEach((_, index) => {
      const own = this.outcomes[index];
      const keep = kind !== 'wait' && own !== undefined && own.kind !== 'handled' && own.kind !== 'duplicate';
      if (keep) return;
      this.outcomes[index] = kind === 'alone' ? { kind } : { kind, error };
    });
    throw new Abort();
  }
}

/**
 * Runs `send` with the client's socket corked when the client pipelines (pg's
 * `pipeline: true`): the statements it sends leave in one write (on the test machine a
 * socket write costs microseconds, the largest part of the consumer's own CPU per
 * message). Without pipelining the driver waits for each answer anyway: `send` runs as is.
 */
function together<T>(client: PoolClient, send: () => T): T {
  const { pipeline, connection } = client as unknown as Partial<Pick<Client, 'pipeline' | 'connection'>>;
  const socket = pipeline === true ? connection?.stream : undefined;
  if (socket === undefined || typeof socket.cork !== 'function') return send();
  socket.cork();
  try {
    return send();
  } finally {
    socket.uncork();
  }
}

/** Resolves with the error `query` fails with, or undefined: a statement sent now and judged later. */
function settledError(query: Promise<unknown>): Promise<unknown> {
  return query.then(
    () => undefined,
    (err: unknown) => err ?? new Error('statement failed'),
  );
}

function unavailable(err: unknown): InboxUnavailable {
  return err instanceof InboxUnavailable ? err : new InboxUnavailable(`inbox: ${errorMessage(err)}`, { cause: err });
}

/** The error of a handler that returned with its transaction aborted. */
function swallowed(err: unknown): Error {
  const detail = err === undefined ? '' : ` (${errorMessage(err)})`;
  return new Error(
    `the handler returned, but its transaction was aborted by an error it caught: rethrow it, or use a savepoint of its own${detail}`,
  );
}
