/**
 * Version 2: what the workers of a cluster share besides the journal. `run_requests` makes a run
 * request delivered twice by the queue a no-op (its run id, once the run started); `workers`
 * lists the worker processes with their last heartbeat and counters (`replikit workers`).
 */
export const SCHEMA_V2 = `
CREATE TABLE replikit.run_requests (
  request_id text PRIMARY KEY,
  job        text NOT NULL,
  kind       text NOT NULL,
  run_id     text,
  worker     text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE replikit.workers (
  worker       text PRIMARY KEY,
  host         text NOT NULL,
  pid          integer NOT NULL,
  started_at   timestamptz NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  leader       boolean NOT NULL DEFAULT false,
  running      jsonb NOT NULL DEFAULT '[]',
  runs_done    integer NOT NULL DEFAULT 0,
  runs_failed  integer NOT NULL DEFAULT 0,
  bytes_sent   bigint NOT NULL DEFAULT 0,
  stopped_at   timestamptz
);
`;
