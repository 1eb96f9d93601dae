import {
  ConflictError,
  isTerminal,
  type JobRecord,
  type LeaseOptions,
  type ReplicaLease,
  type RunJournal,
  type RunRecord,
  type SaveRunOptions,
  type ScheduleRequest,
  type ScheduleState,
  type StateStore,
  toJournal,
} from '@replikit/core';
import pg from 'pg';
import { takeJobLock } from './job-lock.js';
import { type MigrationResult, migrate } from './migrate.js';
import { leaseLost, leaseReplica } from './replica-leases.js';

/** Options of {@link PostgresStateStore.open}. */
export interface PostgresStoreOptions {
  /** A libpq-style connection string: `postgres://user:password@host:5432/db` (`?host=/socket/dir` for a unix socket). */
  connectionString: string;
  /**
   * Connections in the store's pool (a held job lock has one more of its own).
   * @default 4
   */
  poolSize?: number;
}

interface JournalRow {
  journal: RunJournal | RunRecord;
}

/** A connection string with the password masked, for messages and `location`. */
function maskPassword(url: string): string {
  return url.replace(/(\/\/[^:/@]+:)[^@]*@/, '$1***@');
}

/**
 * A {@link StateStore} on PostgreSQL, shared by any number of workers: each run's journal is one
 * row (`replikit.runs`, the journal as `jsonb`) replaced by a single statement, so every
 * `saveRun` is atomic and durable once PostgreSQL commits it; unfinished runs are found through a
 * partial index; job locks are advisory locks that end with the holder's connection; replica
 * leases carry an epoch from a sequence, and a fenced `saveRun` writes only while its lease is
 * current ({@link leaseReplica}). The schema is migrated when the store opens.
 *
 * @example
 * ```ts
 * const store = await PostgresStateStore.open({ connectionString: 'postgres://replikit@db/replikit' });
 * const engine = new ReplicationEngine({ stateStore: store, transport: localTransport() });
 * // …
 * await store.close();
 * ```
 */
export class PostgresStateStore implements StateStore {
  /** The connection string, password masked. */
  readonly location: string;
  /** The connection string the store was opened with (a second client opens the same). */
  readonly connectionString: string;
  /** What opening the store migrated. */
  readonly migration: MigrationResult;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly connection: pg.ClientConfig,
    migration: MigrationResult,
  ) {
    this.connectionString = connection.connectionString ?? '';
    this.location = maskPassword(this.connectionString);
    this.migration = migration;
  }

  /**
   * Connects, and brings the schema up to this version (in a transaction under an advisory lock).
   * Rejects with `E_STORE_VERSION` when the database's schema is newer than this code.
   */
  static async open(options: PostgresStoreOptions): Promise<PostgresStateStore> {
    const connection: pg.ClientConfig = { connectionString: options.connectionString, application_name: 'replikit' };
    const pool = new pg.Pool({ ...connection, max: options.poolSize ?? 4 });
    // An idle connection that breaks is dropped by the pool; the next query opens another.
    pool.on('error', () => undefined);
    try {
      const client = await pool.connect();
      try {
        return new PostgresStateStore(pool, connection, await migrate(client));
      } finally {
        client.release();
      }
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
  }

  /**
   * Runs one parameterised statement on the store's pool (for companions such as
   * {@link PostgresFailoverStore}).
   * @internal
   */
  async query<R extends object>(sql: string, values: unknown[]): Promise<{ rows: R[] }> {
    return this.pool.query<R & pg.QueryResultRow>(sql, values);
  }

  /** Closes the pool's connections (held job locks keep theirs until released). */
  async close(): Promise<void> {
    await this.pool.end();
  }

  /**
   * Replaces the run's row. With `options.fence`, in the same statement: the row is written only
   * while that lease is current and unexpired (its row is locked `FOR SHARE`, so a takeover waits
   * for this write or this write sees the takeover), and never over a row written under a newer
   * epoch; otherwise rejects with `E_LEASE_LOST`. A row once written under a lease takes no
   * unfenced write.
   */
  async saveRun(record: RunJournal, options: SaveRunOptions = {}): Promise<void> {
    const { fence } = options;
    const values = [
      record.runId,
      record.job.name,
      record.state,
      isTerminal(record.state),
      record.startedAt,
      fence?.epoch ?? null,
      JSON.stringify(record),
    ];
    const upsert = `
      ON CONFLICT (run_id) DO UPDATE
        SET job = EXCLUDED.job, state = EXCLUDED.state, finished = EXCLUDED.finished,
            started_at = EXCLUDED.started_at, lease_epoch = EXCLUDED.lease_epoch,
            journal = EXCLUDED.journal, saved_at = now()
        WHERE runs.lease_epoch IS NULL OR runs.lease_epoch <= EXCLUDED.lease_epoch`;
    const result = fence
      ? await this.pool.query(
          `WITH current_lease AS (
             SELECT 1 FROM replikit.replica_leases
             WHERE replica = $8 AND epoch = $6 AND expires_at > clock_timestamp()
             FOR SHARE
           )
           INSERT INTO replikit.runs AS runs (run_id, job, state, finished, started_at, lease_epoch, journal)
           SELECT $1, $2, $3, $4, $5, $6, $7 FROM current_lease ${upsert}`,
          [...values, fence.replica],
        )
      : await this.pool.query(
          `INSERT INTO replikit.runs AS runs (run_id, job, state, finished, started_at, lease_epoch, journal)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ${upsert}`,
          values,
        );
    if (result.rowCount === 1) return;
    if (fence) throw leaseLost(fence.replica, fence.epoch, `journal write of run ${record.runId}`);
    throw new ConflictError(
      `run ${record.runId} is journaled under a replica lease; an unfenced write cannot replace it (take the replica's lease and write under it)`,
      { details: { runId: record.runId } },
    );
  }

  /** Loads a run's journal; one an earlier version saved flat is returned as a journal of this version. */
  async loadRun(runId: string): Promise<RunJournal | undefined> {
    const { rows } = await this.pool.query<JournalRow>('SELECT journal FROM replikit.runs WHERE run_id = $1', [runId]);
    return rows[0] && toJournal(rows[0].journal);
  }

  async listRuns(): Promise<RunJournal[]> {
    const { rows } = await this.pool.query<JournalRow>('SELECT journal FROM replikit.runs ORDER BY started_at, run_id');
    return rows.map((row) => toJournal(row.journal));
  }

  /** The oldest unfinished run of job `name`, from a partial index of unfinished runs. */
  async findUnfinished(name: string): Promise<RunJournal | undefined> {
    const { rows } = await this.pool.query<JournalRow>(
      'SELECT journal FROM replikit.runs WHERE job = $1 AND NOT finished ORDER BY started_at, run_id LIMIT 1',
      [name],
    );
    return rows[0] && toJournal(rows[0].journal);
  }

  /**
   * Replaces the job's row. With `options.fence` (a run's commit), in the same statement: written
   * only while that lease is current and unexpired (locked `FOR SHARE` as in {@link saveRun});
   * otherwise rejects with `E_LEASE_LOST` and the row is unchanged.
   */
  async saveJob(record: JobRecord, options: SaveRunOptions = {}): Promise<void> {
    const { fence } = options;
    const upsert = 'ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record';
    if (!fence) {
      await this.pool.query(`INSERT INTO replikit.jobs (name, record) VALUES ($1, $2) ${upsert}`, [
        record.name,
        JSON.stringify(record),
      ]);
      return;
    }
    const result = await this.pool.query(
      `WITH current_lease AS (
         SELECT 1 FROM replikit.replica_leases
         WHERE replica = $3 AND epoch = $4 AND expires_at > clock_timestamp()
         FOR SHARE
       )
       INSERT INTO replikit.jobs (name, record) SELECT $1, $2 FROM current_lease ${upsert}`,
      [record.name, JSON.stringify(record), fence.replica, fence.epoch],
    );
    if (result.rowCount !== 1) throw leaseLost(fence.replica, fence.epoch, `record of job ${record.name}`);
  }

  async loadJob(name: string): Promise<JobRecord | undefined> {
    const { rows } = await this.pool.query<{ record: JobRecord }>('SELECT record FROM replikit.jobs WHERE name = $1', [
      name,
    ]);
    return rows[0]?.record;
  }

  async lockJob(name: string, runId: string): Promise<() => Promise<void>> {
    return takeJobLock(this.pool, this.connection, name, runId);
  }

  async saveSchedule(state: ScheduleState): Promise<void> {
    await this.pool.query(
      `INSERT INTO replikit.schedules (job, state) VALUES ($1, $2)
       ON CONFLICT (job) DO UPDATE SET state = EXCLUDED.state`,
      [state.job, JSON.stringify(state)],
    );
  }

  async loadSchedule(name: string): Promise<ScheduleState | undefined> {
    const { rows } = await this.pool.query<{ state: ScheduleState }>(
      'SELECT state FROM replikit.schedules WHERE job = $1',
      [name],
    );
    return rows[0]?.state;
  }

  async listSchedules(): Promise<ScheduleState[]> {
    const { rows } = await this.pool.query<{ state: ScheduleState }>(
      'SELECT state FROM replikit.schedules ORDER BY job',
    );
    return rows.map((row) => row.state);
  }

  async saveScheduleRequest(request: ScheduleRequest): Promise<void> {
    await this.pool.query(
      `INSERT INTO replikit.schedule_requests (job, request) VALUES ($1, $2)
       ON CONFLICT (job) DO UPDATE SET request = EXCLUDED.request`,
      [request.job, JSON.stringify(request)],
    );
  }

  async loadScheduleRequest(name: string): Promise<ScheduleRequest | undefined> {
    const { rows } = await this.pool.query<{ request: ScheduleRequest }>(
      'SELECT request FROM replikit.schedule_requests WHERE job = $1',
      [name],
    );
    return rows[0]?.request;
  }

  /** Takes the lease on `replica` with a new epoch; `E_CONFLICT` while another worker's lease is live. */
  async leaseReplica(replica: string, options: LeaseOptions): Promise<ReplicaLease> {
    return leaseReplica(this.pool, replica, options);
  }
}
