import type { Pool } from 'pg';
import { errorMessage } from '../../src/errors';
import { endpointStatus } from '../kit/relay-http';
import type { RelayProcess } from '../kit/relay-process';
import { between } from './random';
import { SHUTDOWN_TIMEOUT_MS, type ChaosRelays } from './relays';
import { sleep } from './sleep';

/** How often a freeze stops the leader rather than a standby (the leader's is the freeze that moves work). */
const FREEZE_LEADER_SHARE = 0.75;
/** A freeze lasts between these (ms): longer than the relay's 4 s lease, so that a frozen leader loses the lead. */
const FREEZE_MIN_MS = 5_000;
const FREEZE_MAX_MS = 15_000;
/** A leader frozen at least this long (ms) must have lost the lead before it is thawed. */
const MUST_MOVE_AFTER_MS = 10_000;
/** A restarted relay must be ready again within this (ms) before the rolling restart goes on. */
const READY_AGAIN_MS = 30_000;

/** What the fleet's faults act on, and where they record what went wrong. */
export interface FleetTargets {
  readonly cluster: ChaosRelays;
  readonly admin: Pool;
  readonly schema: string;
  readonly violations: string[];
}

/**
 * The relay that leads now: the holder of a running lease (`<schema>.relay_lease`), by
 * its pid in `<schema>.relay_replicas`. Undefined while no lease runs (a takeover, a
 * database cut) or the holder is no relay of the run.
 */
export async function leaderIndex(admin: Pool, schema: string, relays: readonly RelayProcess[]): Promise<number | undefined> {
  const { rows } = await admin.query<{ pid: number }>(
    `SELECT r.pid FROM "${schema}".relay_lease AS l
       JOIN "${schema}".relay_replicas AS r ON r.replica_id = l.holder
      WHERE l.expires_at > now()`,
  );
  const pid = rows[0]?.pid;
  const index = relays.findIndex((relay) => relay.running && relay.pid === pid);
  return index < 0 ? undefined : index;
}

/** "leader" or "standby", for a fault's detail. */
export function role(index: number, leader: number | undefined): string {
  return index === leader ? 'leader' : 'standby';
}

/**
 * Stops relay `index` with SIGTERM and waits for its exit; an exit other than 0, or one
 * slower than its shutdown timeout allows, is a violation (labelled `fault`). Returns
 * how long it took (ms).
 *
 * A relay restarted a moment ago is first given the time to start: until its HTTP
 * endpoint answers it has not yet set up its signal handling, and SIGTERM ends it as it
 * ends any process (by the signal, not exit 0) — on a loaded machine that takes seconds.
 */
export async function stopGracefully(relays: readonly RelayProcess[], index: number, fault: string, violations: string[]): Promise<number> {
  const relay = relays[index]!;
  const deadline = Date.now() + READY_AGAIN_MS;
  while (relay.running && Date.now() < deadline && (await endpointStatus(relay.port, '/healthz')) === 0) await sleep(50);
  const startedAt = Date.now();
  relay.kill('SIGTERM');
  const exit = await relay.exited;
  const tookMs = Date.now() - startedAt;
  if (exit.code !== 0)
    violations.push(`${fault}: relay ${index} exited ${exit.code ?? exit.signal}, not 0: ${relay.stderr.slice(-3).join(' | ')}`);
  if (tookMs > SHUTDOWN_TIMEOUT_MS + 3_000) violations.push(`${fault}: relay ${index} took ${tookMs} ms to stop`);
  return tookMs;
}

/**
 * A freeze: SIGSTOP for 5–15 s, then SIGCONT. Three times in four the leader (when one
 * leads), else a standby. While a frozen leader is stopped, the lease row is watched for
 * the replica that takes over; a leader frozen 10 s or more that still leads is a
 * violation. Returns the fault's detail.
 */
export async function freezeRelay(random: () => number, targets: FleetTargets): Promise<string> {
  const { cluster, admin, schema, violations } = targets;
  const { relays } = cluster;
  // Every draw is made whatever the outcome, so that the schedule after it stays the seed's.
  const leaderDraw = random();
  const standbyDraw = random();
  const durationMs = Math.round(between(random, FREEZE_MIN_MS, FREEZE_MAX_MS));
  const leader = await leaderIndex(admin, schema, relays);
  const standbys = relays.flatMap((_, i) => (i === leader ? [] : [i]));
  const index = leader !== undefined && leaderDraw < FREEZE_LEADER_SHARE ? leader : standbys[Math.floor(standbyDraw * standbys.length)]!;
  const relay = relays[index]!;
  const frozenAt = Date.now();
  let moved: { readonly to: number; readonly afterMs: number } | undefined;
  relay.freeze();
  try {
    while (Date.now() - frozenAt < durationMs) {
      if (index === leader && moved === undefined) {
        const now = await leaderIndex(admin, schema, relays);
        if (now !== undefined && now !== index) moved = { to: now, afterMs: Date.now() - frozenAt };
      }
      await sleep(Math.max(0, Math.min(100, durationMs - (Date.now() - frozenAt))));
    }
  } finally {
    relay.thaw();
  }
  const what = `relay ${index} (${role(index, leader)}) for ${durationMs} ms`;
  if (index !== leader) return what;
  if (moved) return `${what}; the lead moved to relay ${moved.to} after ${moved.afterMs} ms`;
  if (durationMs >= MUST_MOVE_AFTER_MS)
    violations.push(`freeze: relay ${index} was frozen ${durationMs} ms as the leader and nobody took over`);
  return `${what}; the lead did not move`;
}

/**
 * A rolling restart, as a deployment does it: every relay in turn (starting at one
 * drawn from `random`) is stopped with SIGTERM, started again and must be ready again
 * before the next one stops. Returns the fault's detail.
 */
export async function rollingRestart(random: () => number, targets: FleetTargets): Promise<string> {
  const { cluster, admin, schema, violations } = targets;
  const { relays, restart } = cluster;
  const first = Math.floor(random() * relays.length);
  const leaderBefore = await leaderIndex(admin, schema, relays);
  const steps: string[] = [];
  for (let turn = 0; turn < relays.length; turn += 1) {
    const index = (first + turn) % relays.length;
    const label = `relay ${index} (${role(index, await leaderIndex(admin, schema, relays))})`;
    const stopMs = await stopGracefully(relays, index, 'rolling restart', violations);
    const startedAt = Date.now();
    await restart(index);
    try {
      await relays[index]!.ready(READY_AGAIN_MS);
    } catch (err: unknown) {
      violations.push(`rolling restart: relay ${index} not ready again: ${errorMessage(err)}`);
    }
    steps.push(`${label} stopped in ${stopMs} ms, ready after ${Date.now() - startedAt} ms`);
  }
  const leaderAfter = await leaderIndex(admin, schema, relays);
  return `${steps.join(', ')}; leader relay ${leaderBefore ?? 'none'} → relay ${leaderAfter ?? 'none'}`;
}
