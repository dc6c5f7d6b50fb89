import { failedAttempt } from './verdicts';
import type { OutboxMessage } from '../domain/message';
import { invalidMessage } from '../domain/outcome';
import { errorMessage } from '../errors';
import { isDatabaseAway } from '../util/outage';
import type { BatchReport } from './batch';
import type { BatchFault } from './faults';
import { CulpritSearch } from './culprit-search';
import type { Logger } from '../observability/logger';
import type { BackoffPolicy } from '../util/backoff';
import type { Clock, HealthPort, QueuePort } from './ports';
import type { Turn } from './schedule';
import type { StallWatch } from './stall';
import { WriteGuard } from './write-guard';

/** What recovery reads of the loop's settings and uses of its ports. */
export interface RecoverySettings {
  readonly batchSize: number;
  readonly maxAttempts: number;
  readonly retentionMs: number;
}

export interface RecoveryDeps {
  readonly queue: QueuePort;
  readonly backoff: BackoffPolicy;
  readonly health: HealthPort;
  readonly log: Logger;
  readonly clock: Clock;
}

/**
 * What the loop does after a batch failed for a reason that is not a lost connection:
 * find the message that caused it (relay/isolation.ts) or, when the relay's own writes
 * fail, stop claiming until a probe of them passes (relay/write-guard.ts).
 */
export class Recovery {
  private readonly culpritSearch: CulpritSearch;
  private readonly writes: WriteGuard;

  constructor(
    private readonly settings: RecoverySettings,
    private readonly deps: RecoveryDeps,
    private readonly stall: StallWatch,
    private readonly observe: (report: BatchReport) => void,
  ) {
    this.culpritSearch = new CulpritSearch(settings.batchSize);
    this.writes = new WriteGuard(deps.clock);
  }

  /** How many rows the next claim takes. */
  get claimLimit(): number {
    return this.culpritSearch.claimLimit;
  }

  /** Whether the relay's writes are known to fail (claim nothing, probe instead). */
  get writesFailing(): boolean {
    return this.writes.failing;
  }

  /** A batch committed. */
  succeeded(): void {
    this.culpritSearch.succeeded();
    if (this.writes.recovered()) {
      this.deps.health.setProblem('writes', undefined);
      this.deps.log.info('writes to the outbox table succeed again');
    }
  }

  /**
   * A batch failed for a reason that is not a lost connection. While handling messages:
   * narrow the claim until the culprit is alone, then record its failure (an attempt, the
   * error), so it retries with backoff and dies like any failing message while the rest
   * flows on. The relay's own writes: stop claiming and probe them (relay/write-guard.ts).
   */
  async onFault(fault: BatchFault): Promise<Turn> {
    const { health, log } = this.deps;
    health.setDatabaseUp(true);
    if (fault.phase === 'writes') {
      const reason = `the relay's writes to the outbox table fail: ${fault.message}`;
      if (this.writes.failed())
        log.error(
          { err: fault.message, claimed: fault.claimed.length },
          'writes to the outbox table fail: claiming stops until they succeed',
        );
      health.setProblem('writes', reason);
      this.culpritSearch.narrowToOne();
      this.stall.sawDue(reason);
      return { kind: 'error' };
    }
    const culprit = this.culpritSearch.failed(fault.claimed);
    if (!culprit) {
      log.warn(
        { err: fault.message, claimed: fault.claimed.length, next: this.culpritSearch.claimLimit },
        'a batch failed: narrowing it down to the message that causes it',
      );
      this.stall.sawDue(`a batch failed (${fault.message})`);
      return { kind: 'again' };
    }
    await this.recordCulprit(culprit, fault.message);
    return { kind: 'again' };
  }

  private async recordCulprit(culprit: OutboxMessage, cause: string): Promise<void> {
    const { attempts, dead, retryInMs } = failedAttempt(culprit, this.settings.maxAttempts, this.deps.backoff, this.deps.clock.now());
    const error = `cannot publish: ${cause}`;
    const started = this.deps.clock.now();
    try {
      await this.deps.queue.withClaim((claim) => claim.markFailed([{ id: culprit.id, error, retryInMs, dead }]));
    } catch (err: unknown) {
      this.deps.log.error(
        { messageId: culprit.messageId, err: errorMessage(err) },
        'cannot record the failure of the message that makes its batch fail',
      );
      return;
    }
    this.deps.log.warn({ messageId: culprit.messageId, attempts, dead, err: cause }, 'this message makes its batch fail: failure recorded');
    this.stall.progressed();
    this.observe({
      claimed: 1,
      full: false,
      messages: [culprit],
      verdicts: [{ kind: 'failed', ...invalidMessage(error), retryInMs, dead, returned: false }],
      parkedBehindKey: 0,
      keptBack: 0,
      settled: 1,
      noProgress: false,
      durationMs: this.deps.clock.now() - started,
    });
  }

  /** The relay's writes failed: until they pass a probe (changing nothing), nothing is claimed or published. */
  async probeTurn(): Promise<Turn> {
    if (!this.writes.dueForProbe()) return { kind: 'wait' }; // wait a poll interval
    try {
      await this.deps.queue.probeWrites(this.settings.retentionMs === 0);
      this.writes.probePassed();
      this.deps.log.info("the outbox table accepts the relay's writes again: resuming, one message at a time at first");
      return { kind: 'again' };
    } catch (err: unknown) {
      this.writes.probeFailed();
      if (!isDatabaseAway(err)) this.deps.health.setProblem('writes', `the relay's writes to the outbox table fail: ${errorMessage(err)}`);
      return { kind: 'error' };
    }
  }
}
