import { SCHEMA_V1 } from './schema-v1.js';
import { SCHEMA_V2 } from './schema-v2.js';

/** One step of the schema: applied once, in order, inside the migration transaction. */
export interface Migration {
  /** The schema version after this step (1, 2, …: no gaps). */
  version: number;
  /** What the step does, recorded with it. */
  name: string;
  /** The SQL, run as one multi-statement query. */
  sql: string;
}

/** Every migration this version knows, oldest first; the last one's version is the code's schema version. */
export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: 'runs, jobs, schedules, locks, leases', sql: SCHEMA_V1 },
  { version: 2, name: 'run requests, workers', sql: SCHEMA_V2 },
];

/** The schema version this code writes. */
export const SCHEMA_VERSION: number = MIGRATIONS.at(-1)?.version ?? 0;
