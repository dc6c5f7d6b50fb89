import type { Config } from 'jest';

const config: Config = {
  // A test file that leaves a relay, a pool, a connection, a socket, a child process or
  // a timer that keeps the process alive open fails, 2 s after its last afterAll
  // (test/kit/leak-check-environment.ts names what it left), so the run ends by itself,
  // without forceExit (and without its closing 'Force exiting Jest' line). The safety
  // net behind it is in the global teardown: should anything still hold the process 5 s
  // after the last file (a test that timed out and could not clean up), it ends the
  // run, naming what was open, instead of letting it hang until CI's own time limit.
  testEnvironment: '<rootDir>/test/kit/leak-check-environment.ts',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  globalSetup: '<rootDir>/test/kit/global-setup.ts',
  globalTeardown: '<rootDir>/test/kit/global-teardown.ts',
  testTimeout: 60_000,
  detectOpenHandles: false,
};

export default config;
