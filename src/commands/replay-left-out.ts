import { OutboxError } from '../errors';
import type { LeftOut } from './replay-session';

/** A value as a POSIX shell reads it back: bare when it is plain, else in single quotes. */
export function shellWord(value: string): string {
  return /^[A-Za-z0-9._:/@%+=,-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The command that replays exactly the messages of one destination a replay left out:
 * its own selection (as its entry keeps it, `until` settled), narrowed to that exchange,
 * or for a command to that queue of the default exchange.
 */
export function replayCommandFor(args: Readonly<Record<string, unknown>>, destination: { exchange: string } | { queue: string }): string {
  const text = (name: string): string | undefined => (typeof args[name] === 'string' ? (args[name] as string) : undefined);
  const words = ['outbox-relay', 'replay'];
  const ids = Array.isArray(args['ids']) ? (args['ids'] as string[]) : [];
  if (ids.length > 0) words.push(...ids);
  else
    words.push(
      '--since',
      shellWord(text('since') ?? ''),
      ...(text('until') === undefined ? [] : ['--until', shellWord(text('until') as string)]),
    );
  const type = text('type');
  if (type !== undefined) words.push('--type', shellWord(type));
  const key = text('key');
  if (key !== undefined) words.push('--key', shellWord(key));
  if ('exchange' in destination) {
    words.push('--exchange', shellWord(destination.exchange));
    const routingKey = text('routingKey');
    if (routingKey !== undefined) words.push('--routing-key', shellWord(routingKey));
  } else {
    words.push('--exchange', "''", '--routing-key', shellWord(destination.queue));
  }
  return words.join(' ');
}

/**
 * The one-line failure of a replay that finished but left messages out: how many, which
 * destinations were missing with the commands that replay exactly those once they exist,
 * and how many the broker cannot take at all (exit 1: not everything was replayed).
 */
export function leftOutError(auditId: string, leftOut: LeftOut, total: number, args: Readonly<Record<string, unknown>>): OutboxError {
  const n = (count: number): string => count.toLocaleString('en-US');
  const destinations = [
    ...Object.entries(leftOut.exchanges).map(([exchange, count]) => ({ what: `exchange "${exchange}" (${n(count)})`, to: { exchange } })),
    ...Object.entries(leftOut.queues).map(([queue, count]) => ({ what: `queue "${queue}" (${n(count)})`, to: { queue } })),
  ];
  const parts: string[] = [];
  if (destinations.length > 0) {
    parts.push(
      `whose destination does not exist: ${destinations.map((d) => d.what).join(', ')}; once it exists, replay them with: ` +
        destinations.map((d) => replayCommandFor(args, d.to)).join('; '),
    );
  }
  const refused = Object.entries(leftOut.unpublishable);
  if (refused.length > 0) {
    parts.push(`that the broker cannot take (${refused.map(([reason, count]) => `${reason} ${n(count)}`).join(', ')})`);
  }
  return new OutboxError(
    'REPLAY_STOPPED',
    `replay #${auditId} finished but left out ${n(leftOut.count)} of ${n(total)} messages, ${parts.join('; and ')}`,
  );
}
