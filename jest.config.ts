import type { Config } from 'jest';

const config: Config = {
  // A test file that leaves a relay, a pool, a connection, a socket, a child process or
  // a timer that keeps the process alive open fails, 2 s after its last afterAll
  // (test/kit/leak-check-environment.ts names what it left), so leaks fail the run
  // without forceExit. forceExit is the safety net behind it: after a test that timed
  // out and could not clean up, the run ends with its report instead of hanging until
  // CI's own time limit kills it with nothing said.
  testEnvironment: '<rootDir>/test/kit/leak-check-environment.ts',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  globalSetup: '<rootDir>/test/kit/global-setup.ts',
  globalTeardown: '<rootDir>/test/kit/global-teardown.ts',
  testTimeout: 60_000,
  detectOpenHandles: false,
  forceExit: true,
};

export default config;
