import { isReplikitError } from '@replikit/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStateStore } from '../src/index.js';
import { migrate } from '../src/migrate.js';
import { MIGRATIONS, SCHEMA_VERSION } from '../src/migrations/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

const versions = (url: string) =>
  withClient(url, async (c) => (await c.query('SELECT version FROM replikit.schema_version ORDER BY version')).rows);

describe('schema migrations', () => {
  it('workers opening a new database at once migrate it once', async () => {
    const url = await server.createDatabase();
    const stores = await Promise.all([1, 2, 3, 4].map(() => PostgresStateStore.open({ connectionString: url })));
    expect(stores.map((s) => s.migration.to)).toEqual([SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]);
    expect(stores.filter((s) => s.migration.from === 0)).toHaveLength(1);
    expect(await versions(url)).toEqual(MIGRATIONS.map((m) => ({ version: m.version })));
    await Promise.all(stores.map((s) => s.close()));
  });

  it('applies only the migrations a database lacks', async () => {
    const url = await server.createDatabase();
    await (await PostgresStateStore.open({ connectionString: url })).close();
    const next = [
      ...MIGRATIONS,
      { version: SCHEMA_VERSION + 1, name: 'a column', sql: 'ALTER TABLE replikit.jobs ADD COLUMN note text' },
    ];
    const result = await withClient(url, (c) => migrate(c, next));
    expect(result).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION + 1 });
    expect((await versions(url)).map((r) => r.version)).toEqual(next.map((m) => m.version));
    expect(await withClient(url, (c) => migrate(c, next))).toEqual({
      from: SCHEMA_VERSION + 1,
      to: SCHEMA_VERSION + 1,
    });
  });

  it('a failing migration leaves the database as it was', async () => {
    const url = await server.createDatabase();
    await (await PostgresStateStore.open({ connectionString: url })).close();
    const broken = [
      ...MIGRATIONS,
      {
        version: SCHEMA_VERSION + 1,
        name: 'half',
        sql: 'CREATE TABLE replikit.half (x int); SELECT no_such_function()',
      },
    ];
    await expect(withClient(url, (c) => migrate(c, broken))).rejects.toThrow(/no_such_function/);
    expect((await versions(url)).map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    const half = await withClient(
      url,
      async (c) => (await c.query("SELECT to_regclass('replikit.half') AS t")).rows[0],
    );
    expect(half).toEqual({ t: null });
  });

  it('a database newer than the code is refused with E_STORE_VERSION and left untouched', async () => {
    const url = await server.createDatabase();
    const store = await PostgresStateStore.open({ connectionString: url });
    await store.saveJob({ name: 'kept', method: 'qhybrid', updatedAt: '2026-12-07T04:00:00.000Z' });
    await store.close();
    await withClient(url, (c) =>
      c.query("INSERT INTO replikit.schema_version (version, name) VALUES ($1, 'from the future')", [
        SCHEMA_VERSION + 5,
      ]),
    );
    const refused = await PostgresStateStore.open({ connectionString: url }).catch((error: unknown) => error);
    expect(isReplikitError(refused, 'E_STORE_VERSION')).toBe(true);
    expect((refused as Error).message).toContain('upgrade this worker');
    expect((refused as { details: unknown }).details).toEqual({ found: SCHEMA_VERSION + 5, supported: SCHEMA_VERSION });
    const kept = await withClient(url, async (c) => (await c.query('SELECT name FROM replikit.jobs')).rows);
    expect(kept).toEqual([{ name: 'kept' }]);
  });
});
