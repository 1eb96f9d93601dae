import { StoreVersionError } from '@replikit/core';
import type pg from 'pg';
import { MIGRATION_LOCK } from './advisory-keys.js';

import { MIGRATIONS, type Migration } from './migrations/index.js';

/** What opening a store migrated: the schema version before and after ({@link PostgresStateStore.migration}). */
export interface MigrationResult {
  /** The schema version before. */
  from: number;
  /** The schema version now. */
  to: number;
}

/**
 * Brings the store's schema up to this code's version: in one transaction, under a
 * transaction-scoped advisory lock so that workers starting together migrate once, each missing
 * migration is applied and recorded in `replikit.schema_version`. A database whose schema is newer
 * than the code is refused with `E_STORE_VERSION` and left untouched.
 */
export async function migrate(
  client: pg.ClientBase,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<MigrationResult> {
  const supported = migrations.at(-1)?.version ?? 0;
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', MIGRATION_LOCK);
    await client.query('CREATE SCHEMA IF NOT EXISTS replikit');
    await client.query(
      `CREATE TABLE IF NOT EXISTS replikit.schema_version (
         version    integer PRIMARY KEY,
         name       text NOT NULL,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const { rows } = await client.query<{ version: number | null }>(
      'SELECT max(version) AS version FROM replikit.schema_version',
    );
    const from = rows[0]?.version ?? 0;
    if (from > supported) {
      throw new StoreVersionError(
        `the PostgreSQL state store has schema version ${from}, newer than the ${supported} this version of replikit knows: upgrade this worker (a store is never migrated down)`,
        { details: { found: from, supported } },
      );
    }
    for (const migration of migrations.filter((m) => m.version > from)) {
      await client.query(migration.sql);
      await client.query('INSERT INTO replikit.schema_version (version, name) VALUES ($1, $2)', [
        migration.version,
        migration.name,
      ]);
    }
    await client.query('COMMIT');
    return { from, to: Math.max(from, supported) };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
