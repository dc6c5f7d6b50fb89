import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool } from 'pg';
import { publishIdentity } from '../broker/signer';
import type { SelftestBroker } from '../broker/selftest-broker';
import type { Config } from '../config/load-config';
import type { PublishOutcome } from '../domain/outcome';
import { OutboxError } from '../errors';
import type { SelftestStore } from '../outbox/selftest-store';
import { MessageQueue } from '../outbox/message-queue';
import type { Steps } from './selftest-steps';
import { interruption } from './selftest-interruption';

/** How often the canary row is read while waiting for a relay (ms). */
const POLL_MS = 20;
/** Beyond the publish timeout, how long the self-test's claim transaction may sit idle before PostgreSQL ends it (ms). */
const IDLE_CLAIM_MARGIN_MS = 30_000;

/** What the publish phase of `outbox-relay selftest` works with. */
export interface PublishContext {
  readonly config: Config;
  readonly pool: Pool;
  readonly store: SelftestStore;
  readonly broker: SelftestBroker;
  readonly steps: Steps;
  readonly wait: { readonly ms: number; readonly why: string };
  /** performance.now() by which the canary must be delivered. */
  readonly deadline: number;
  readonly id: string;
  readonly timeoutMs: number;
  /** Aborted on SIGINT/SIGTERM: the waits for a relay end at once. */
  readonly signal: AbortSignal;
}

/**
 * Waits for a running relay to publish the canary; when none did within the wait,
 * claims exactly that row (SKIP LOCKED: a relay that took it meanwhile keeps it and the
 * self-test waits for its mark instead), publishes it on the relay's path and marks it.
 */
export async function publishSelftestMessage(ctx: PublishContext): Promise<'relay' | 'selftest'> {
  const { steps, wait } = ctx;
  const insertedAt = performance.now();
  if (await markedBy(ctx, insertedAt + wait.ms)) {
    steps.note('publish', insertedAt, (ms) => `claimed by a running relay (published_at set after ${ms} ms)`);
    return 'relay';
  }
  steps.note('relay wait', insertedAt, () => `no relay claimed it within ${wait.ms} ms (${wait.why}): published by selftest itself`);
  const queue = new MessageQueue(ctx.pool, ctx.config.schema, ctx.config.publishTimeoutMs + IDLE_CLAIM_MARGIN_MS);
  let phase = 'claim';
  const claimed = await queue
    .withClaim(async (session) => {
      const [message] = await steps.run(
        'claim',
        () => session.claimIds([ctx.id]),
        (rows) => (rows.length > 0 ? 'FOR UPDATE SKIP LOCKED, by id' : 'a relay took it meanwhile: waiting for its mark'),
      );
      if (!message) return false;
      const timeoutMs = Math.max(1, Math.min(ctx.config.publishTimeoutMs, Math.round(ctx.deadline - performance.now())));
      await steps.run('confirm', async () => confirmed(await ctx.broker.publish(message, publishIdentity(ctx.config), timeoutMs)));
      phase = 'mark published';
      await steps.run(
        'mark published',
        () => session.markPublished([message.id], false),
        () => 'published_at set',
      );
      phase = 'commit';
      return true;
    })
    .catch((err: unknown) => {
      throw steps.fail(phase, err);
    });
  if (claimed) return 'selftest';
  const heldSince = performance.now();
  if (await markedBy(ctx, ctx.deadline)) {
    steps.note('publish', heldSince, (ms) => `claimed by a running relay (published_at set ${ms} ms later)`);
    return 'relay';
  }
  const state = await ctx.store.state(ctx.pool, ctx.id);
  const last = state.attempts > 0 ? `: ${state.attempts} failed attempt(s), last error: ${state.lastError ?? 'none'}` : '';
  throw steps.fail('publish', `not published within ${ctx.timeoutMs} ms (--timeout-ms)${last}`);
}

/** Polls the canary until a relay has published it (true) or `until` passes (false); a failed attempt fails. */
async function markedBy(ctx: PublishContext, until: number): Promise<boolean> {
  for (;;) {
    if (ctx.signal.aborted) throw interruption(ctx.signal);
    const state = await ctx.store.state(ctx.pool, ctx.id);
    // A relay with OUTBOX_RETENTION=0 deletes what it publishes.
    if (state.published || !state.exists) return true;
    // A relay that tried and failed (e.g. it publishes to another broker, which lacks the
    // exchange) is the finding: its retry would come after the backoff, too late to wait for.
    if (state.attempts > 0 || state.finished) {
      throw ctx.steps.fail(
        'publish',
        `a running relay could not publish it (${state.attempts} attempt(s)): ${state.lastError ?? 'no error recorded'}`,
      );
    }
    if (performance.now() + POLL_MS > until) return false;
    await sleep(POLL_MS, undefined, { signal: ctx.signal }).catch(() => undefined);
  }
}

/** Returns when the broker confirmed the canary; throws the reason otherwise. */
function confirmed(outcome: PublishOutcome): void {
  switch (outcome.kind) {
    case 'confirmed':
      return;
    case 'returned':
      throw new OutboxError('CHECK_FAILED', `the broker returned it as unroutable (${outcome.replyText})`);
    case 'failed':
      throw new OutboxError('CHECK_FAILED', `${outcome.reason}: ${outcome.error}`);
    case 'unconfirmed':
      throw new OutboxError('CHECK_FAILED', `no confirm: ${outcome.error}`);
    case 'refused':
      throw new OutboxError(
        'CHECK_FAILED',
        'the broker refused it (a negative confirm: a queue bound to the exchange is full under x-overflow reject-publish, or has no leader)',
      );
    case 'expired':
      throw new OutboxError('CHECK_FAILED', 'not sent: it reached its expires_at');
    case 'kept_back':
    case 'destination_held':
      throw new OutboxError('CHECK_FAILED', 'not sent');
  }
}
