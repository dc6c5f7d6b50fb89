import { hasExpired, type OutboxMessage } from '../domain/message';
import { invalidMessage, type Preflight, type PublishOutcome } from '../domain/outcome';
import { errorMessage } from '../errors';
import { isOutage } from '../util/outage';
import type { Admission } from './held-destinations';
import { KeyStops } from './key-stops';
import type { BrokerPort, PublishBatchOptions } from './ports';

const SEND: Preflight = { kind: 'send' };

/** Which messages of held destinations are sent (relay/held-destinations.ts). */
export interface DestinationGate {
  admit(message: OutboxMessage, nowMs: number): Admission;
}

/**
 * Sends a batch (in id order) and returns one outcome per message. A message whose
 * expires_at has been reached is not sent (`expired`) and holds nothing back. What the
 * broker adapter knows before sending is applied next: a message that cannot succeed fails
 * unsent, a message that may close the channel goes out alone after the others; either
 * holds back the later messages of its key in this batch (they are not sent). Then the
 * `gate`: a message for a held destination is not sent (`destination_held`) unless it is
 * the probe; both hold back the later messages of their key (the probe goes alone). The
 * rest is published pipelined.
 */
export async function sendBatch(
  broker: BrokerPort,
  messages: readonly OutboxMessage[],
  options: PublishBatchOptions & { now?: () => number; gate?: DestinationGate },
): Promise<PublishOutcome[]> {
  const nowMs = options.now?.() ?? Date.now();
  const expired = messages.map((m) => hasExpired(m, nowMs));
  const checkable = (m: OutboxMessage, index: number): boolean => m.defect === undefined && !expired[index];
  const preflight = await broker.preflight(messages.filter(checkable));
  let checked = 0;
  const outcomes: (PublishOutcome | undefined)[] = new Array(messages.length).fill(undefined);
  const stops = new KeyStops();
  const together: number[] = [];
  const apart: number[] = [];
  messages.forEach((message, index) => {
    const check: Preflight = checkable(message, index) ? (preflight[checked++] ?? SEND) : SEND;
    if (expired[index]) {
      outcomes[index] = { kind: 'expired' };
    } else if (stops.isStopped(message)) {
      outcomes[index] = { kind: 'kept_back' };
    } else if (message.defect !== undefined) {
      outcomes[index] = { kind: 'failed', ...invalidMessage(message.defect) };
      stops.stop(message);
    } else if (check.kind === 'fail') {
      outcomes[index] = { kind: 'failed', reason: check.reason, error: check.error };
      stops.stop(message);
    } else {
      const admission = options.gate?.admit(message, nowMs) ?? 'send';
      if (admission === 'wait') outcomes[index] = { kind: 'destination_held' };
      else if (check.kind === 'apart') apart.push(index);
      else together.push(index);
      if (admission !== 'send' || check.kind === 'apart') stops.stop(message);
    }
  });
  const publish = async (indexes: readonly number[]): Promise<void> => {
    const results = await broker.publish(
      indexes.map((i) => messages[i] as OutboxMessage),
      { timeoutMs: options.timeoutMs, signal: options.signal, onSettled: options.onSettled, onWritten: options.onWritten },
    );
    indexes.forEach((messageIndex, i) => {
      outcomes[messageIndex] = results[i];
    });
  };
  if (together.length > 0) await publish(together);
  for (const index of apart) {
    if (options.signal.aborted) outcomes[index] = { kind: 'unconfirmed', error: 'shutting down' };
    else {
      try {
        await publish([index]);
      } catch (err: unknown) {
        // The connection went away (perhaps this very message's doing, judged by the
        // adapter): what was decided so far stands; the rest waits for the next batch.
        if (!isOutage(err)) throw err;
        outcomes[index] = { kind: 'unconfirmed', error: errorMessage(err) };
      }
    }
  }
  return outcomes as PublishOutcome[];
}
