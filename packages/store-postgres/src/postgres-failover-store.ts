import type { FailoverRecord, FailoverStore } from '@replikit/core';
import type { PostgresStateStore } from './postgres-state-store.js';

/** The query method of a {@link PostgresStateStore}'s pool that a failover store borrows. */
type Query = <R extends object>(sql: string, values: unknown[]) => Promise<{ rows: R[] }>;

/**
 * A {@link FailoverStore} in the same database as a {@link PostgresStateStore}
 * (`replikit.failover`, one row per job, replaced by one statement).
 */
export class PostgresFailoverStore implements FailoverStore {
  private readonly query: Query;

  /** @param store - the state store whose connections it uses (open it first: it migrates the schema). */
  constructor(store: PostgresStateStore) {
    this.query = (sql, values) => store.query(sql, values);
  }

  async load(job: string): Promise<FailoverRecord | undefined> {
    const { rows } = await this.query<{ record: FailoverRecord }>(
      'SELECT record FROM replikit.failover WHERE job = $1',
      [job],
    );
    return rows[0]?.record;
  }

  async save(record: FailoverRecord): Promise<void> {
    await this.query(
      `INSERT INTO replikit.failover (job, record) VALUES ($1, $2)
       ON CONFLICT (job) DO UPDATE SET record = EXCLUDED.record`,
      [record.job, JSON.stringify(record)],
    );
  }
}
