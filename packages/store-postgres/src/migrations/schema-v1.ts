/**
 * Version 1 of the store's schema: the run journal (one row per run, the journal as JSON, an index
 * of unfinished runs per job), job records, schedule states and requests, job locks, replica
 * leases with their epoch sequence, and failover records. Everything lives in schema `replikit`.
 */
export const SCHEMA_V1 = `
CREATE TABLE replikit.runs (
  run_id      text PRIMARY KEY,
  job         text NOT NULL,
  state       text NOT NULL,
  finished    boolean NOT NULL,
  started_at  text COLLATE "C" NOT NULL,
  lease_epoch bigint,
  journal     jsonb NOT NULL,
  saved_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_by_start ON replikit.runs (started_at, run_id);
CREATE INDEX runs_unfinished ON replikit.runs (job, started_at, run_id) WHERE NOT finished;

CREATE TABLE replikit.jobs (
  name   text PRIMARY KEY,
  record jsonb NOT NULL
);

CREATE TABLE replikit.schedules (
  job   text COLLATE "C" PRIMARY KEY,
  state jsonb NOT NULL
);

CREATE TABLE replikit.schedule_requests (
  job     text PRIMARY KEY,
  request jsonb NOT NULL
);

CREATE TABLE replikit.job_locks (
  name     text PRIMARY KEY,
  lock_id  integer GENERATED ALWAYS AS IDENTITY UNIQUE,
  run_id   text,
  holder   text,
  taken_at timestamptz
);

CREATE SEQUENCE replikit.lease_epochs;
CREATE TABLE replikit.replica_leases (
  replica    text PRIMARY KEY,
  epoch      bigint NOT NULL,
  owner      text NOT NULL,
  ttl_ms     integer NOT NULL,
  expires_at timestamptz NOT NULL
);

CREATE TABLE replikit.failover (
  job    text PRIMARY KEY,
  record jsonb NOT NULL
);
`;
