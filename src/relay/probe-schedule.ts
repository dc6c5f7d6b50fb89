import { backoffMs } from '../util/backoff';

/**
 * The numbers of a held destination (relay/held-destinations.ts), pure. A negative
 * confirm is the destination's answer — a queue full under `x-overflow: reject-publish`
 * (its consumers are behind, for minutes or hours), or a quorum queue electing a leader
 * (for a moment) — so the relay asks it again with one message, soon at first and then
 * less and less often.
 */

/**
 * The first probe of a held destination, this long after the refusal (ms): a quorum
 * queue's election is over in well under a second, and the first probes cost one
 * message each.
 */
export const PROBE_FIRST_MS = 100;

/**
 * The longest wait between two probes (ms): the recovery after a full queue has room
 * again takes at most this long (plus a batch), and a destination that stays held
 * costs the broker one refused publish per this long.
 */
export const PROBE_MAX_MS = 5_000;

/**
 * The wait before the next probe after `refusedProbes` probes in a row were refused:
 * 100 ms doubling, capped at 5 s (no jitter: one relay probes a destination, so there
 * is no herd to spread).
 */
export function probeDelayMs(refusedProbes: number): number {
  return backoffMs(refusedProbes + 1, { firstMs: PROBE_FIRST_MS, maxMs: PROBE_MAX_MS, jitter: 'none' });
}

/**
 * The most probes a destination held for `heldMs` gets: one at each wait of
 * `probeDelayMs` after the last (a probe's own round trip only makes them fewer).
 * What a test of the refused publishes bounds them with.
 */
export function maxProbesWithin(heldMs: number): number {
  let probes = 0;
  let at = 0;
  for (;;) {
    at += probeDelayMs(probes);
    if (at > heldMs) return probes;
    probes += 1;
  }
}

/**
 * How long the messages waiting for a held destination (all but the next probe) are
 * parked at a time: the longer it has been held, the longer, so that a destination
 * held for hours costs a re-park of its messages every few minutes, not every probe.
 * When the destination takes messages again they are released at once; a relay that
 * stops (or loses its leadership) leaves them parked at most this long, unless the
 * next one releases them at its start.
 */
export const HORIZON_MIN_MS = 60_000;
export const HORIZON_MAX_MS = 5 * 60_000;

export function horizonMs(heldForMs: number): number {
  return Math.min(Math.max(heldForMs, HORIZON_MIN_MS), HORIZON_MAX_MS);
}

/**
 * A destination that takes messages again for this long without refusing any is no
 * longer held (ms): the gauge, the alert and the log then say so. A refusal within it
 * (a consumer that drains slower than the relay publishes) continues the same hold.
 */
export const SETTLE_MS = 5_000;

/**
 * A probe due for this long with none sent means no message is left to send as one
 * (the next probe expired, or was discarded): one waiting row is released to become it,
 * and when none is left the destination is no longer held (ms).
 */
export const LAPSE_MS = 2_000;

/**
 * How many waiting rows a destination that takes messages again gets back at first;
 * each release after its messages were confirmed doubles it, up to the caller's limit
 * (two batches). A queue with room for a few messages is sent a few, not a whole
 * backlog to refuse.
 */
export const RELEASE_FIRST = 16;
