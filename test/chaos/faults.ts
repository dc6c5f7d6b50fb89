import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import type { RabbitCluster } from '../kit/rabbit-cluster';
import type { ChaosDatabase } from './pg-failover';
import type { Written } from './producers';
import { freezeRelay, leaderIndex, role, rollingRestart, stopGracefully } from './fleet-faults';
import { between, pick } from './random';
import type { ChaosRelays } from './relays';
import { processResources } from './resources';
import { sleep } from './sleep';

export type FaultKind =
  | 'kill -9'
  | 'SIGTERM'
  | 'broker cut'
  | 'database cut'
  | 'broker slow'
  | 'poison'
  | 'freeze'
  | 'rolling restart'
  | 'node loss'
  | 'failover';

const KINDS: readonly FaultKind[] = ['kill -9', 'SIGTERM', 'broker cut', 'database cut', 'broker slow', 'poison', 'freeze'];
/** The kinds a run adds on request, in the order they join the draw list. */
const OPTIONAL_KINDS: readonly FaultKind[] = ['rolling restart', 'node loss', 'failover'];

export interface Fault {
  readonly kind: FaultKind;
  readonly start: number;
  end: number;
  readonly detail: string;
}

/** What the fault schedule acts on, and where it records what it did. */
export interface FaultTargets {
  readonly cluster: ChaosRelays;
  /** Relay 0's first pid: relay 0 lives through the run, its RSS is sampled once per fault. */
  readonly relay0Pid: number;
  readonly admin: Pool;
  readonly schema: string;
  readonly exchange: string;
  /** Poison messages are added here. */
  readonly written: Written[];
  readonly violations: string[];
  readonly log: (line: string) => void;
  /**
   * The RabbitMQ cluster the relays use, when the run has one (`--rabbit-cluster`): the
   * schedule then also kills a node with -9 (never the first, where the consumer reads)
   * and starts it again.
   */
  readonly rabbit?: RabbitCluster;
  /**
   * The PostgreSQL primary and synchronous standby the run uses, when it has them
   * (`--pg-failover`): the schedule then also kills the primary, promotes the standby and
   * makes a new standby (ChaosDatabase.failover).
   */
  readonly database?: ChaosDatabase;
  /**
   * Adds the rolling restart (`--rolling-restarts`): every relay in turn stopped with
   * SIGTERM, started again and ready before the next (test/chaos/fleet-faults.ts). Not in
   * the default mix: it restarts relay 0, whose resource figures over the whole run are
   * the suite's leak check.
   */
  readonly rollingRestarts?: boolean;
}

/**
 * The fault schedule: for `seconds`, a fault drawn from `random` every 1.5–4 s (relays
 * killed or stopped and restarted, a relay frozen for 5–15 s, a proxy cut or slowed, a
 * poison message; on request every relay restarted in turn, with a RabbitMQ cluster a
 * node killed -9 and started again, with a database of the run's own a failover to its
 * standby); relays that crashed meanwhile are violations, and restarted. Returns the
 * faults and relay 0's RSS once per fault.
 */
export async function runFaultSchedule(
  random: () => number,
  seconds: number,
  targets: FaultTargets,
): Promise<{ faults: Fault[]; rssSamples: number[] }> {
  const { cluster, relay0Pid, admin, schema, exchange, written, violations, log, rabbit, database, rollingRestarts } = targets;
  // Without the flags, the draw list (and so a seed's schedule) is the default one.
  const kinds: readonly FaultKind[] = [
    ...KINDS,
    ...(rollingRestarts ? (['rolling restart'] as const) : []),
    ...(rabbit ? (['node loss'] as const) : []),
    ...(database ? (['failover'] as const) : []),
  ];
  const { relays, dbProxy, brokerProxy, restart } = cluster;
  const faults: Fault[] = [];
  const rssSamples: number[] = [];
  const endAt = Date.now() + seconds * 1000;
  while (Date.now() < endAt) {
    await sleep(between(random, 1_500, 4_000));
    if (Date.now() >= endAt) break;
    const kind = pick<FaultKind>(random, kinds);
    const fault: Fault = { kind, start: Date.now(), end: Date.now(), detail: '' };
    faults.push(fault);
    if (kind === 'kill -9' || kind === 'SIGTERM') {
      const index = 1 + Math.floor(random() * 2); // relay 0 lives through the run (resource figures)
      const relay = relays[index]!;
      const was = role(index, await leaderIndex(admin, schema, relays));
      if (kind === 'SIGTERM') await stopGracefully(relays, index, 'SIGTERM', violations);
      else relay.kill('SIGKILL');
      const exit = await relay.exited;
      fault.end = Date.now();
      (fault as { detail: string }).detail = `relay ${index} (${was}): exit ${exit.code ?? exit.signal}`;
      await sleep(between(random, 300, 1_500));
      await restart(index);
    } else if (kind === 'freeze') {
      (fault as { detail: string }).detail = await freezeRelay(random, { cluster, admin, schema, violations });
    } else if (kind === 'rolling restart') {
      (fault as { detail: string }).detail = await rollingRestart(random, { cluster, admin, schema, violations });
    } else if (kind === 'broker cut' || kind === 'database cut') {
      const proxy = kind === 'broker cut' ? brokerProxy : dbProxy;
      proxy.cut();
      await sleep(between(random, 500, 3_000));
      proxy.restore();
    } else if (kind === 'node loss' && rabbit) {
      const node = 1 + Math.floor(random() * (rabbit.nodes.length - 1));
      await rabbit.killNode(node);
      await sleep(between(random, 500, 3_000));
      await rabbit.restartNode(node);
      (fault as { detail: string }).detail = `node ${node + 1} killed -9, back after ${Date.now() - fault.start} ms`;
    } else if (kind === 'failover' && database) {
      (fault as { detail: string }).detail = await database.failover();
    } else if (kind === 'broker slow') {
      brokerProxy.latencyMs = Math.round(between(random, 50, 400));
      (fault as { detail: string }).detail = `${brokerProxy.latencyMs} ms`;
      await sleep(between(random, 2_000, 5_000));
      brokerProxy.latencyMs = 0;
    } else {
      const id = randomUUID();
      await admin.query(`INSERT INTO "${schema}".messages (message_id, exchange, routing_key, payload) VALUES ($1, $2, 'poison', '{}')`, [
        id,
        `${exchange}.missing`,
      ]);
      written.push({ id, key: null, version: 0, poison: true, committedAt: Date.now() });
    }
    fault.end = Math.max(fault.end, Date.now());
    if (relays[0]!.pid === relay0Pid && relays[0]!.running) rssSamples.push(processResources(relay0Pid).rssMiB);
    // Only the schedule stops relays: one that exited by itself crashed.
    for (const [index, relay] of relays.entries()) {
      if (relay.crashed) {
        violations.push(
          `relay ${index} crashed (exit ${relay.child.exitCode ?? relay.child.signalCode}): ${[...relay.stderr, ...relay.stdout].slice(-3).join(' | ')}`,
        );
        await restart(index);
      }
    }
    log(`  ${new Date(fault.start).toISOString().slice(11, 23)} ${kind}${fault.detail ? ` (${fault.detail})` : ''}`);
  }
  return { faults, rssSamples };
}

/** How many faults of each kind the schedule caused. */
export function countFaults(faults: readonly Fault[]): Record<FaultKind, number> {
  return Object.fromEntries([...KINDS, ...OPTIONAL_KINDS].map((k) => [k, faults.filter((f) => f.kind === k).length])) as Record<
    FaultKind,
    number
  >;
}
