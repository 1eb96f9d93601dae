import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ConflictError, InputError, LeaseLostError, type LeaseOptions, type ReplicaLease } from '@replikit/core';
import type pg from 'pg';

interface LeaseRow {
  epoch: string;
  owner: string;
  expires_at: Date;
}

function toEpoch(value: string): number {
  const epoch = Number(value);
  if (!Number.isSafeInteger(epoch)) throw new RangeError(`lease epoch ${value} is not a safe integer`);
  return epoch;
}

/** The owner a lease gets when the caller names none: host, process and a random part. */
export function defaultOwner(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/**
 * Takes the lease on `replica` in one statement: a new row, or the row of an expired lease taken
 * over, each with the next value of `replikit.lease_epochs` as epoch. A live lease of any owner is
 * not taken (`E_CONFLICT`, naming the holder). Times are the server's, so workers' clocks do not
 * matter.
 */
export async function leaseReplica(pool: pg.Pool, replica: string, options: LeaseOptions): Promise<ReplicaLease> {
  const { ttlMs } = options;
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > 2 ** 31 - 1) {
    throw new InputError(`lease ttlMs must be an integer from 1 to 2147483647, got ${ttlMs}`);
  }
  const owner = options.owner ?? defaultOwner();
  const { rows } = await pool.query<LeaseRow>(
    `INSERT INTO replikit.replica_leases AS l (replica, epoch, owner, ttl_ms, expires_at)
     VALUES ($1, nextval('replikit.lease_epochs'), $2, $3::integer, clock_timestamp() + $3::integer * interval '1 millisecond')
     ON CONFLICT (replica) DO UPDATE
       SET epoch = EXCLUDED.epoch, owner = EXCLUDED.owner, ttl_ms = EXCLUDED.ttl_ms, expires_at = EXCLUDED.expires_at
       WHERE l.expires_at <= clock_timestamp()
     RETURNING epoch, owner, expires_at`,
    [replica, owner, ttlMs],
  );
  const row = rows[0];
  if (!row) {
    const holder = await pool.query<LeaseRow>(
      'SELECT epoch, owner, expires_at FROM replikit.replica_leases WHERE replica = $1',
      [replica],
    );
    const held = holder.rows[0];
    throw new ConflictError(
      `replica '${replica}' is leased by ${held?.owner ?? 'another worker'} until ${held?.expires_at.toISOString() ?? 'soon'}; another worker is running it`,
      { details: { replica, owner: held?.owner, expiresAt: held?.expires_at.toISOString() } },
    );
  }
  return new PostgresReplicaLease(pool, replica, toEpoch(row.epoch), owner, row.expires_at.toISOString());
}

class PostgresReplicaLease implements ReplicaLease {
  constructor(
    private readonly pool: pg.Pool,
    readonly replica: string,
    readonly epoch: number,
    readonly owner: string,
    public expiresAt: string,
  ) {}

  async heartbeat(): Promise<void> {
    const { rows } = await this.pool.query<{ expires_at: Date }>(
      `UPDATE replikit.replica_leases
       SET expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond'
       WHERE replica = $1 AND epoch = $2 AND expires_at > clock_timestamp()
       RETURNING expires_at`,
      [this.replica, this.epoch],
    );
    const row = rows[0];
    if (!row) throw leaseLost(this.replica, this.epoch, 'heartbeat');
    this.expiresAt = row.expires_at.toISOString();
  }

  async release(): Promise<void> {
    await this.pool.query(
      `UPDATE replikit.replica_leases SET expires_at = clock_timestamp()
       WHERE replica = $1 AND epoch = $2 AND expires_at > clock_timestamp()`,
      [this.replica, this.epoch],
    );
  }
}

/** The error of a write or heartbeat made under a lease that is no longer current. */
export function leaseLost(replica: string, epoch: number, what: string): LeaseLostError {
  return new LeaseLostError(
    `the ${what} under lease epoch ${epoch} of replica '${replica}' was refused: the lease expired or another worker took it; stop writing the replica (its new holder resumes the run)`,
    { details: { replica, epoch } },
  );
}
