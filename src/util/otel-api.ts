import type * as OtelApi from '@opentelemetry/api';

/** The OpenTelemetry API, as the libraries reach it (an optional peer dependency). */
export type OtelApiModule = typeof OtelApi;

/**
 * Where `@opentelemetry/api` 1.x keeps what a service registered (its context manager,
 * tracer provider, propagator): `Symbol.for('opentelemetry.js.api.1')` on the global
 * object. Before anything is registered there is no active span to read, so the
 * producer need not load the API at all.
 */
const REGISTRY = Symbol.for('opentelemetry.js.api.1');

/** Whether the service has registered anything with the OpenTelemetry API (1.x). */
export function otelRegistered(): boolean {
  return (globalThis as Record<symbol, unknown>)[REGISTRY] !== undefined;
}

/**
 * The memo of `loadOtelApi`: a failed `require` is not cached by Node and costs a walk of
 * the file system each time, so the answer is kept once known. Not configuration, and the
 * same for every caller in the process.
 */
const memo: { api?: OtelApiModule | null } = {};

/**
 * `@opentelemetry/api` when it is installed (the service's copy, shared through the API's
 * global registry), undefined otherwise. Loaded on the first call, never at import time,
 * so `outbox-relay/producer` and `outbox-relay/consumer` stay light without it.
 */
export function loadOtelApi(): OtelApiModule | undefined {
  if (memo.api === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      memo.api = require('@opentelemetry/api') as OtelApiModule;
    } catch {
      memo.api = null;
    }
  }
  return memo.api ?? undefined;
}
