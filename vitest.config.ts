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
  },
});
