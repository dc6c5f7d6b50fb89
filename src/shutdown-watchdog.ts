import { Worker } from 'node:worker_threads';

/**
 * The watchdog's own thread: a timer of its own event loop, which keeps running while
 * the main thread is blocked (a dependency that loops synchronously, as the OpenTelemetry
 * batch processor did with a batch size of 0, starves every timer of the main thread).
 * When it fires it writes one log line and ends the process with SIGKILL: a blocked
 * thread can run no signal handler, so no gentler way is certain to work.
 */
const WATCHDOG_THREAD = `
const { workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
setTimeout(() => {
  const line = JSON.stringify({ level: 'fatal', time: new Date().toISOString(), service: 'outbox-relay', graceMs: workerData.graceMs,
    msg: 'shutdown overran its time and the process does not answer (its event loop is blocked): killing it' });
  try { writeSync(workerData.fd, line + '\\n'); } catch {}
  process.kill(workerData.pid, 'SIGKILL');
}, workerData.afterMs);
`;

/**
 * Ends this process with SIGKILL after `afterMs` unless it exited before, whatever its
 * main thread is doing; says so in one JSON log line on `fd` first. The thread does not
 * keep the process alive. Started once the shutdown begins; costs one thread meanwhile.
 */
export function startShutdownWatchdog(afterMs: number, graceMs: number, fd: 1 | 2): void {
  const worker = new Worker(WATCHDOG_THREAD, { eval: true, workerData: { afterMs, graceMs, fd, pid: process.pid } });
  worker.unref();
  // A thread that cannot start leaves the in-thread deadline (cli.ts) alone in charge.
  worker.on('error', () => undefined);
}
