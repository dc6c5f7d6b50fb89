import { destinationKey, heldNote, HOLD_SPREAD_MS, type Destination } from '../domain/held-note';
import type { OutboxMessage, ReleaseOrder } from '../domain/message';
import type { PublishOutcome } from '../domain/outcome';
import { HORIZON_MIN_MS, horizonMs, LAPSE_MS, PROBE_FIRST_MS, probeDelayMs, RELEASE_FIRST, SETTLE_MS } from './probe-schedule';

/** What becomes of a message whose destination may be held: sent, sent as the probe, or not sent (it waits). */
export type Admission = 'send' | 'probe' | 'wait';

/**
 * Where a waiting message is parked: its row until `atMs`, the later messages of its key
 * until `keyAtMs`; `note` is their last_error. Parked until the horizon, rows are spread
 * after it by their id above `spreadFromId` (the row's own only when `spread`).
 */
export interface HoldPark {
  readonly atMs: number;
  readonly keyAtMs: number;
  readonly note: string;
  readonly spread: boolean;
  readonly spreadFromId: string;
}

/** The hold a row parked behind a waiting message of its key (until `atMs`) waits for. */
export interface ParkedHold {
  readonly note: string;
  readonly flowing: boolean;
  /** How far its parked rows reach (its horizon and the spread after it). */
  readonly upToMs: number;
  readonly spreadFromId: string;
}

/** One hold from its first refusal to its end. */
export interface HoldEpisode {
  readonly destination: Destination;
  /** From the first refusal to the moment it took messages again (or to its end, when nothing waited any more). */
  readonly heldMs: number;
  /** Publishes the destination refused meanwhile. */
  readonly refused: number;
}

/** Told of every change (relay/observer.ts turns them into log lines and the gauge). */
export interface HoldListener {
  held(destination: Destination, firstProbeInMs: number): void;
  /** It took messages again and refused none for SETTLE_MS. */
  flowing(episode: HoldEpisode): void;
  /** No message waited for it any more (they expired or were discarded): nothing to probe with. */
  abandoned(episode: HoldEpisode): void;
  /** The number of held destinations. */
  changed(count: number): void;
}

/** A release for the batch to run (`ClaimPort.release`), and whom its count goes back to. */
export interface HoldRelease extends ReleaseOrder {
  readonly key: string;
  /** A lapsed probe: one row, to become the next probe. */
  readonly lapse: boolean;
}

interface Hold {
  readonly destination: Destination;
  readonly note: string;
  /** When the first refusal came (epoch ms). */
  readonly since: number;
  /** The id of the first refused message: parked rows are spread after the horizon by their id above it. */
  readonly spreadFromId: string;
  /** `held`: one probe at a time, the rest waits; `flowing`: sent at full speed, parked rows released. */
  phase: 'held' | 'flowing';
  /** When the current held phase began: only a publish sent after it proves the destination flows. */
  heldAt: number;
  refusedProbes: number;
  nextProbeAt: number;
  probeMessageId: string | undefined;
  /** The waiting row parked until the next probe (the others wait until the horizon). */
  candidateId: string | undefined;
  horizonAt: number;
  previousHorizonAt: number | undefined;
  flowingSince: number;
  refused: number;
  /** Flowing, and rows parked for it are left: the next release runs once its messages are confirmed. */
  releasing: boolean;
  releaseDue: boolean;
  releaseLimit: number;
  lastReleaseAt: number;
}

const SILENT: HoldListener = { held: () => undefined, flowing: () => undefined, abandoned: () => undefined, changed: () => undefined };

const keyOf = (m: OutboxMessage): string => destinationKey({ exchange: m.exchange, routingKey: m.routingKey });

/**
 * The destinations (exchange and routing key) this relay holds because the broker nacked
 * messages for them, in its memory only: a relay that starts learns them again from the
 * broker's answers. A negative confirm is the destination's answer, not the message's
 * fault: it costs no attempt. While a destination is held, its messages are not sent
 * but parked — one until the next probe, the others until a horizon minutes away, so
 * they leave the head of the due index and other destinations' claims — and hold their
 * keys like any waiting message. One probe at a time (probe-schedule.ts: 100 ms doubling
 * to 5 s) finds out when it takes messages again; then it is sent at full speed and its
 * parked rows are released in growing chunks, paced by their confirms.
 *
 * Every method takes the time (epoch ms) and is synchronous: the two workers of a relay
 * share one instance, and nothing here waits.
 */
export class HeldDestinations {
  private readonly holds = new Map<string, Hold>();

  constructor(private readonly listener: HoldListener = SILENT) {}

  /** Destinations held now (from the first refusal until they flowed for SETTLE_MS). */
  get size(): number {
    return this.holds.size;
  }

  /** Whether `destination` is held and not flowing. */
  isHeld(destination: Destination): boolean {
    return this.holds.get(destinationKey(destination))?.phase === 'held';
  }

  /** Whether `message` is sent (its destination flows), sent as the probe, or waits. */
  admit(message: OutboxMessage, nowMs: number): Admission {
    // Called for every message of every batch: with nothing held (the usual case), no key is built.
    if (this.holds.size === 0) return 'send';
    const hold = this.holds.get(keyOf(message));
    if (!hold || hold.phase === 'flowing') return 'send';
    if (hold.probeMessageId !== undefined || nowMs < hold.nextProbeAt) return 'wait';
    hold.probeMessageId = message.messageId;
    hold.candidateId = undefined;
    return 'probe';
  }

  /**
   * The broker's answers to a batch sent at `sentAtMs`: a refusal holds its destination
   * (or backs off its probes); a confirm of the probe, or of anything sent after the
   * destination was held, makes it flow. Answers to publishes sent before the hold began
   * change nothing: they were in flight when the first refusal came.
   */
  record(messages: readonly OutboxMessage[], outcomes: readonly PublishOutcome[], sentAtMs: number, nowMs: number): void {
    messages.forEach((message, index) => {
      const kind = outcomes[index]?.kind;
      const hold = this.holds.get(keyOf(message));
      if (kind === 'refused') this.refusal(message, hold, sentAtMs, nowMs);
      else if ((kind === 'confirmed' || kind === 'returned') && hold) this.confirmation(message, hold, sentAtMs, nowMs);
      else if (kind === 'expired' && hold?.candidateId === message.id) hold.candidateId = undefined;
    });
  }

  private refusal(message: OutboxMessage, hold: Hold | undefined, sentAtMs: number, nowMs: number): void {
    if (!hold) {
      const destination = { exchange: message.exchange, routingKey: message.routingKey };
      this.holds.set(keyOf(message), {
        destination,
        note: heldNote(destination),
        since: nowMs,
        spreadFromId: message.id,
        phase: 'held',
        heldAt: nowMs,
        refusedProbes: 0,
        nextProbeAt: nowMs + probeDelayMs(0),
        probeMessageId: undefined,
        candidateId: undefined,
        horizonAt: this.uniqueHorizon(nowMs + HORIZON_MIN_MS),
        previousHorizonAt: undefined,
        flowingSince: nowMs,
        refused: 1,
        releasing: false,
        releaseDue: false,
        releaseLimit: RELEASE_FIRST,
        lastReleaseAt: nowMs,
      });
      this.listener.held(destination, probeDelayMs(0));
      this.listener.changed(this.holds.size);
      return;
    }
    hold.refused += 1;
    if (hold.probeMessageId === message.messageId) {
      hold.probeMessageId = undefined;
      hold.refusedProbes += 1;
      hold.nextProbeAt = nowMs + probeDelayMs(hold.refusedProbes);
    } else if (hold.phase === 'flowing' && sentAtMs >= hold.flowingSince) {
      // Refused anew while flowing (its consumers drain slower than the relay sends):
      // held again, probed soon; the first release after the next probe is small again.
      hold.phase = 'held';
      hold.heldAt = nowMs;
      hold.refusedProbes = 0;
      hold.nextProbeAt = nowMs + probeDelayMs(0);
      hold.releaseDue = false;
      hold.releaseLimit = RELEASE_FIRST;
    }
  }

  private confirmation(message: OutboxMessage, hold: Hold, sentAtMs: number, nowMs: number): void {
    if (hold.phase === 'held') {
      if (hold.probeMessageId !== message.messageId && sentAtMs < hold.heldAt) return;
      hold.phase = 'flowing';
      hold.flowingSince = nowMs;
      hold.probeMessageId = undefined;
      hold.candidateId = undefined;
      hold.releasing = true;
      hold.releaseDue = true;
    } else if (hold.releasing && sentAtMs >= hold.flowingSince) {
      hold.releaseDue = true;
    }
  }

  /**
   * Where a message that was refused, or waits (`admit` said so), is parked: the first
   * becomes the next probe (parked until then), the others wait until the horizon. The
   * later messages of its key wait until the horizon too. Undefined when its destination
   * flows again (a waiting message is then claimed again at once).
   */
  parkOf(message: OutboxMessage, nowMs: number, refused: boolean): HoldPark | undefined {
    const hold = this.holds.get(keyOf(message));
    if (!hold) return undefined;
    const { note, spreadFromId } = hold;
    if (hold.phase === 'flowing') {
      // A refusal of a publish sent before it flowed again: a short wait, then it goes.
      const atMs = nowMs + PROBE_FIRST_MS;
      return refused ? { atMs, keyAtMs: atMs, note, spread: false, spreadFromId } : undefined;
    }
    const keyAtMs = this.horizon(hold, nowMs);
    if (hold.candidateId !== undefined && hold.candidateId !== message.id)
      return { atMs: keyAtMs, keyAtMs, note, spread: true, spreadFromId };
    hold.candidateId = message.id;
    const probeAt = hold.probeMessageId === undefined ? hold.nextProbeAt : nowMs + probeDelayMs(hold.refusedProbes);
    return { atMs: Math.max(probeAt, nowMs), keyAtMs, note, spread: false, spreadFromId };
  }

  /**
   * The hold whose horizon is `atMs`: a message the ordering parks behind a waiting message
   * of its key (until its blocker is due) waits for that hold too. While the hold is
   * held, it carries the hold's note and is released with the others; once it flows, its
   * blocker is released instead, so the key goes in order whatever order the chunks came in.
   */
  holdForPark(atMs: number): ParkedHold | undefined {
    const within = (horizon: number | undefined): boolean => horizon !== undefined && atMs >= horizon && atMs <= horizon + HOLD_SPREAD_MS;
    for (const hold of this.holds.values()) {
      if (within(hold.horizonAt) || within(hold.previousHorizonAt))
        return {
          note: hold.note,
          flowing: hold.phase === 'flowing',
          upToMs: hold.horizonAt + HOLD_SPREAD_MS,
          spreadFromId: hold.spreadFromId,
        };
    }
    return undefined;
  }

  /** Releases of rows parked for destinations that flow again (each paced by their confirms), at most `maxLimit` rows each. */
  releases(nowMs: number, maxLimit: number): HoldRelease[] {
    const orders: HoldRelease[] = [];
    for (const [key, hold] of this.holds) {
      if (hold.phase !== 'flowing' || !hold.releasing || !hold.releaseDue) continue;
      const limit = Math.min(hold.releaseLimit, maxLimit);
      hold.releaseDue = false;
      hold.releaseLimit = Math.min(hold.releaseLimit * 2, maxLimit);
      hold.lastReleaseAt = nowMs;
      orders.push({ key, note: hold.note, upTo: new Date(hold.horizonAt + HOLD_SPREAD_MS), limit, lapse: false });
    }
    return orders;
  }

  /** Held destinations whose probe is overdue by LAPSE_MS with none sent: one parked row each, to become the probe. */
  lapses(nowMs: number): HoldRelease[] {
    const orders: HoldRelease[] = [];
    for (const [key, hold] of this.holds) {
      if (hold.phase !== 'held' || hold.probeMessageId !== undefined || nowMs < hold.nextProbeAt + LAPSE_MS) continue;
      hold.nextProbeAt = nowMs;
      hold.candidateId = undefined;
      orders.push({ key, note: hold.note, upTo: new Date(hold.horizonAt + HOLD_SPREAD_MS), limit: 1, lapse: true });
    }
    return orders;
  }

  /** How many rows a release made due: fewer than asked ends the releasing; none for a lapse ends the hold. */
  released(order: HoldRelease, count: number, nowMs: number): void {
    const hold = this.holds.get(order.key);
    if (!hold) return;
    if (order.lapse && count === 0) this.end(order.key, hold, 'abandoned', nowMs);
    else if (!order.lapse && count < order.limit) hold.releasing = false;
  }

  /** Probes among `messages` that got no answer (a timeout, the batch failed): the next one after the usual wait. */
  probesEnded(messages: readonly OutboxMessage[], nowMs: number): void {
    for (const message of messages) {
      const hold = this.holds.get(keyOf(message));
      if (hold?.probeMessageId !== message.messageId) continue;
      hold.probeMessageId = undefined;
      hold.nextProbeAt = nowMs + probeDelayMs(hold.refusedProbes);
    }
  }

  /**
   * Ends the holds of destinations that flowed for SETTLE_MS; returns whether a batch
   * should run — a probe is due, or a release — even if no message is due (the loop wakes
   * a worker, as its idle poll may be slow).
   */
  tick(nowMs: number): boolean {
    let batchDue = false;
    for (const [key, hold] of this.holds) {
      if (hold.phase === 'held') batchDue ||= hold.probeMessageId === undefined && nowMs >= hold.nextProbeAt;
      else if (hold.releasing && !hold.releaseDue && nowMs - hold.lastReleaseAt >= SETTLE_MS) hold.releaseDue = true;
      else if (!hold.releasing && nowMs - hold.flowingSince >= SETTLE_MS) this.end(key, hold, 'flowing', nowMs);
      batchDue ||= hold.phase === 'flowing' && hold.releasing && hold.releaseDue;
    }
    return batchDue;
  }

  /** Forgets every hold (this relay stops publishing: another learns them again). */
  clear(): void {
    if (this.holds.size === 0) return;
    this.holds.clear();
    this.listener.changed(0);
  }

  private end(key: string, hold: Hold, how: 'flowing' | 'abandoned', nowMs: number): void {
    this.holds.delete(key);
    const until = how === 'flowing' ? hold.flowingSince : nowMs;
    const episode = { destination: hold.destination, heldMs: until - hold.since, refused: hold.refused };
    if (how === 'flowing') this.listener.flowing(episode);
    else this.listener.abandoned(episode);
    this.listener.changed(this.holds.size);
  }

  /** The horizon of `hold`, moved on when less than half its minimum is left. */
  private horizon(hold: Hold, nowMs: number): number {
    if (hold.horizonAt - nowMs < HORIZON_MIN_MS / 2) {
      hold.previousHorizonAt = hold.horizonAt;
      hold.horizonAt = this.uniqueHorizon(nowMs + horizonMs(nowMs - hold.since));
    }
    return hold.horizonAt;
  }

  /** `atMs`, or later, so that no other hold's rows are parked within the spread after it (a horizon names its hold). */
  private uniqueHorizon(atMs: number): number {
    let at = atMs;
    const clash = (t: number): number | undefined =>
      [...this.holds.values()]
        .flatMap((h) => [h.horizonAt, h.previousHorizonAt])
        .find((other) => other !== undefined && Math.abs(other - t) <= HOLD_SPREAD_MS);
    for (let other = clash(at); other !== undefined; other = clash(at)) at = other + HOLD_SPREAD_MS + 1;
    return at;
  }
}
