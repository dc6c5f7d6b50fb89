import { availableParallelism } from 'node:os';
import type { Config } from 'jest';

/** What every project shares: TypeScript through ts-jest, and the leak check. */
export const common = {
  // A test file that leaves a relay, a pool, a connection, a socket, a child process or
  // a timer that keeps the process alive open fails, 2 s after its last afterAll
  // (test/kit/leak-check-environment.ts names what it left), so the run ends by itself,
  // without forceExit (and without its closing 'Force exiting Jest' line). The safety
  // net behind it is in the global teardown: should anything still hold the process 5 s
  // after the last file (a test that timed out and could not clean up), it ends the
  // run, naming what was open, instead of letting it hang until CI's own time limit.
  testEnvironment: '<rootDir>/test/kit/leak-check-environment.ts',
  // tsconfig.json's isolatedModules makes ts-jest transpile only; `npm run lint`
  // type-checks the tests (tsconfig.json includes test/).
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
} satisfies Config;

/** The integration tier's services: found, started with testcontainers, or named as missing. */
export const services = {
  globalSetup: '<rootDir>/test/kit/global-setup.ts',
  globalTeardown: '<rootDir>/test/kit/global-teardown.ts',
} satisfies Config;

/**
 * Two tiers. `unit`: pure modules and the relay loop over fakes; they need neither
 * PostgreSQL nor RabbitMQ and run in parallel (`npm run test:unit`). `integration`: the
 * real services, relays as processes, the CLI, chaos and fuzz; its global setup finds the
 * services (or starts them with testcontainers, or fails naming them). `npm test` runs
 * both, one file at a time.
 */
const config: Config = {
  projects: [
    {
      ...common,
      displayName: 'unit',
      roots: ['<rootDir>/test/unit'],
      testMatch: ['**/*.test.ts'],
    },
    {
      ...common,
      ...services,
      displayName: 'integration',
      roots: ['<rootDir>/test/integration', '<rootDir>/test/chaos', '<rootDir>/test/fuzz'],
      testMatch: ['**/*.test.ts'],
    },
  ],
  // Jest's default, a worker per core but one, runs the unit tier in band on a machine of
  // two cores (CI's): two workers there take it from 82 s to 58 s of wall time on a loaded
  // machine. `npm test` and the integration tier run in band (--runInBand) whatever this says.
  maxWorkers: Math.max(2, availableParallelism() - 1),
  testTimeout: 60_000,
  detectOpenHandles: false,
};

export default config;
