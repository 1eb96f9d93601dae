/**
 * `@replikit/store-postgres`: replikit's state store on PostgreSQL, shared by many workers, with
 * replica leases whose epochs fence every journal write.
 *
 * @packageDocumentation
 */

export type { MigrationResult } from './migrate.js';
export { SCHEMA_VERSION } from './migrations/index.js';
export { PostgresFailoverStore } from './postgres-failover-store.js';
export { PostgresStateStore, type PostgresStoreOptions } from './postgres-state-store.js';
