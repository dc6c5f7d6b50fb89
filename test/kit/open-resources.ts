/**
 * What the kit opened and has not closed yet: relay processes, in-process relays, pg
 * pools, AMQP connections, TCP proxies, RabbitMQ clusters, PgBouncers. Each kit class adds itself when it opens and
 * removes itself when it closes; the leak check (leak-check-environment.ts) names
 * whatever is still here when a test file ends.
 *
 * The registry lives on the test file's global object, not in a module variable: Jest
 * gives every test file a global of its own, and the environment, which runs outside
 * the file's module registry, reads it from there. Outside Jest (bench, chaos) it is
 * kept the same way and simply never read.
 */

/** One thing the kit opened. */
export interface OpenResource {
  readonly kind:
    | 'relay process'
    | 'consumer process'
    | 'in-process relay'
    | 'pg pool'
    | 'AMQP connection'
    | 'TCP proxy'
    | 'RabbitMQ cluster'
    | 'PgBouncer';
  /** What tells it apart in a failure message: schema, port, pid, target. Never a password. */
  readonly detail: string;
}

/** The property of the global object that holds the registry. */
export const OPEN_RESOURCES = Symbol.for('outbox-relay.test-kit.open-resources');

type Registry = Map<object, OpenResource>;

function registry(): Registry {
  const holder = globalThis as { [OPEN_RESOURCES]?: Registry };
  holder[OPEN_RESOURCES] ??= new Map();
  return holder[OPEN_RESOURCES];
}

/** Records `owner` as open; the returned function records it closed (calling it again does nothing). */
export function trackOpen(owner: object, resource: OpenResource): () => void {
  registry().set(owner, resource);
  return () => void registry().delete(owner);
}

/** Everything recorded as open on `global` (the test file's global object), oldest first. */
export function openResourcesOf(global: object): OpenResource[] {
  const found = (global as { [OPEN_RESOURCES]?: Registry })[OPEN_RESOURCES];
  return found ? [...found.values()] : [];
}
