/**
 * What keeps the process alive, as the leak check compares it: counts of the active
 * resources Node reports (process.getActiveResourcesInfo()) by type, and, for TCP
 * sockets, which service each one is connected to.
 */

/** The resource types a test can leave behind; request types that finish by themselves are left out. */
const WATCHED: Readonly<Record<string, string>> = {
  ProcessWrap: 'child process',
  PipeWrap: 'pipe (a child process’s stdin/stdout/stderr)',
  TCPSocketWrap: 'TCP socket',
  TCPServerWrap: 'listening TCP server',
  Timeout: 'timer (setTimeout/setInterval)',
  UDPWrap: 'UDP socket',
  FSEventWrap: 'file watcher',
};

/** How many of each watched resource type are active now. */
export type HandleCounts = ReadonlyMap<string, number>;

export function countActiveHandles(): HandleCounts {
  const counts = new Map<string, number>();
  for (const type of process.getActiveResourcesInfo()) if (type in WATCHED) counts.set(type, (counts.get(type) ?? 0) + 1);
  return counts;
}

/** What `now` has more of than `baseline`, as "2 × TCP socket (TCPSocketWrap)"; empty when nothing. */
export function handlesAbove(baseline: HandleCounts, now: HandleCounts): string[] {
  return [...now].flatMap(([type, n]) => {
    const extra = n - (baseline.get(type) ?? 0);
    return extra > 0 ? [`${extra} × ${WATCHED[type]} (${type})`] : [];
  });
}

interface SocketLike {
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  readonly localPort?: number;
}

/** The objects behind the active handles (sockets, servers, child processes): an internal Node API, used only for naming. */
export function activeHandleObjects(): readonly object[] {
  const get = (process as unknown as { _getActiveHandles?: () => object[] })._getActiveHandles;
  return typeof get === 'function' ? get.call(process) : [];
}

/**
 * The connected TCP sockets among `handles` that are not in `baseline`, as
 * "127.0.0.1:51234 → 127.0.0.1:5432 (PostgreSQL)"; `services` names known ports.
 */
export function describeNewSockets(
  baseline: ReadonlySet<object>,
  handles: readonly object[],
  services: ReadonlyMap<number, string>,
): string[] {
  return handles.flatMap((handle) => {
    const socket = handle as SocketLike;
    if (baseline.has(handle) || socket.remotePort === undefined) return [];
    const service = services.get(socket.remotePort);
    return [`127.0.0.1:${socket.localPort} → ${socket.remoteAddress}:${socket.remotePort}${service ? ` (${service})` : ''}`];
  });
}
