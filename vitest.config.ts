import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

// One config for the whole workspace: every package's tests run against its TypeScript
// sources (the "@replikit/source" export condition), so no build is needed to test.
export default defineConfig({
  resolve: { conditions: ['@replikit/source'] },
  ssr: { resolve: { conditions: ['@replikit/source'] } },
  test: {
    include: ['packages/*/test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // At least two test files at a time (vitest's default is one per core minus one, so one on a
    // two-core machine): most files wait on simulators, qemu and child processes rather than
    // compute, and no test asserts a time, so two share two cores well.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    minWorkers: 1,
  },
});
