import { runStateStoreConformance } from '@replikit/core/testing';
import { afterAll, beforeAll } from 'vitest';
import { PostgresStateStore } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

runStateStoreConformance({
  name: 'PostgresStateStore',
  create: async () => PostgresStateStore.open({ connectionString: await server.createDatabase() }),
  reopen: async (store) =>
    PostgresStateStore.open({ connectionString: (store as PostgresStateStore).connectionString }),
  close: async (store) => (store as PostgresStateStore).close(),
});
