/**
 * `@replikit/store-postgres/testing`: a real PostgreSQL server for tests, started in a temporary
 * folder by the test itself ({@link startTestPostgres}).
 *
 * @packageDocumentation
 */

export { findPostgresBinaries } from './postgres-binaries.js';
export { startTestPostgres, type TestPostgres, type TestPostgresOptions } from './test-postgres.js';
