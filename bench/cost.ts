/**
 * What a message costs the machine: write-ahead log from PostgreSQL's insert position,
 * CPU time from /proc (Linux), split by who spent it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Pool } from 'pg';

/** PostgreSQL's current WAL insert position, as a byte count. */
export async function walPosition(pool: Pool): Promise<bigint> {
  const r = await pool.query<{ lsn: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::text AS lsn`);
  return BigInt((r.rows[0] as { lsn: string }).lsn.split('.')[0] as string);
}

/** WAL bytes PostgreSQL wrote while `work` ran (everything written meanwhile, autovacuum included). */
export async function walDuring(pool: Pool, work: () => Promise<void>): Promise<number> {
  const before = await walPosition(pool);
  await work();
  return Number((await walPosition(pool)) - before);
}

/**
 * A checkpoint before a measured phase: the first change of a page after a checkpoint
 * logs a full image of the page (8 KiB), and a timed checkpoint falling inside one run
 * but not another would make the WAL figures incomparable. With one just before, the
 * run's WAL is what its writes cost (a phase lasts far less than checkpoint_timeout).
 */
let checkpointRefused = false;
export async function checkpoint(pool: Pool): Promise<void> {
  if (checkpointRefused) return;
  try {
    await pool.query('CHECKPOINT');
  } catch (err: unknown) {
    checkpointRefused = true;
    console.warn(`  (CHECKPOINT refused: ${(err as Error).message}; WAL figures may include full-page images)`);
  }
}

/** Who spent CPU: the relay processes, PostgreSQL's processes, RabbitMQ's, the bench itself. */
export type CpuPart = 'relay' | 'postgresql' | 'rabbitmq' | 'bench';

export interface CpuSample {
  /** Busy time of the whole machine (all cores), seconds. */
  readonly machine: number;
  /** Per process: its part and its user + system time, seconds. */
  readonly processes: ReadonlyMap<number, { part: CpuPart; seconds: number }>;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined; // the process exited meanwhile
  }
}

function partOf(pid: number, comm: string, relayPids: ReadonlySet<number>): CpuPart | undefined {
  if (relayPids.has(pid)) return 'relay';
  if (pid === process.pid) return 'bench';
  if (comm === 'postgres') return 'postgresql';
  if (comm === 'beam.smp' || comm.startsWith('erl_') || comm === 'epmd' || comm === 'inet_gethost') return 'rabbitmq';
  return undefined;
}

/** Reads the machine's and every interesting process's CPU time. */
export function sampleCpu(relayPids: readonly number[] = []): CpuSample {
  const stat = readProc('/proc/stat') ?? '';
  const fields = (stat.split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
  const busy = fields.reduce((a, b) => a + b, 0) - (fields[3] ?? 0) - (fields[4] ?? 0);
  const relays = new Set(relayPids);
  const processes = new Map<number, { part: CpuPart; seconds: number }>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const text = readProc(`/proc/${pid}/stat`);
    if (text === undefined) continue;
    const close = text.lastIndexOf(')');
    const comm = text.slice(text.indexOf('(') + 1, close);
    const part = partOf(pid, comm, relays);
    if (!part) continue;
    const rest = text.slice(close + 2).split(' ');
    // Fields 14 and 15 of /proc/<pid>/stat (utime, stime); rest[0] is field 3.
    const ticks = Number(rest[11]) + Number(rest[12]);
    processes.set(pid, { part, seconds: ticks / TICKS_PER_SECOND });
  }
  return { machine: busy / TICKS_PER_SECOND, processes };
}

/** CPU seconds spent between two samples, by part and for the whole machine. */
export interface CpuSpent {
  readonly machine: number;
  readonly relay: number;
  readonly postgresql: number;
  readonly rabbitmq: number;
  readonly bench: number;
}

/**
 * The difference of two samples. A process that started in between counts from zero; one
 * that ended in between is lost to its part (the machine's figure still has it).
 */
export function cpuBetween(before: CpuSample, after: CpuSample): CpuSpent {
  const spent: Record<CpuPart, number> = { relay: 0, postgresql: 0, rabbitmq: 0, bench: 0 };
  for (const [pid, now] of after.processes) spent[now.part] += now.seconds - (before.processes.get(pid)?.seconds ?? 0);
  return { machine: after.machine - before.machine, ...spent };
}

/** CPU per message in microseconds. */
export function perMessage(spent: CpuSpent, messages: number): CpuSpent {
  const us = (s: number): number => (s * 1e6) / messages;
  return {
    machine: us(spent.machine),
    relay: us(spent.relay),
    postgresql: us(spent.postgresql),
    rabbitmq: us(spent.rabbitmq),
    bench: us(spent.bench),
  };
}

/** User + system CPU seconds of the given processes so far (those that exited count 0). */
export function cpuSecondsOf(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const text = readProc(`/proc/${pid}/stat`);
    if (text === undefined) continue;
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    ticks += Number(rest[11]) + Number(rest[12]);
  }
  return ticks / TICKS_PER_SECOND;
}
