/**
 * `@replikit/core/testing`: the public conformance suite every replikit driver runs from its test
 * file. It imports `vitest` (an optional peer dependency of `@replikit/core`).
 *
 * @example
 * ```ts
 * import { runDriverConformance } from '@replikit/core/testing';
 * import { localTransport } from '@replikit/transport';
 *
 * runDriverConformance({ name: 'my-driver', create: async () => createMyDriver(), fixtures, transport: localTransport() });
 * ```
 *
 * @packageDocumentation
 */

export {
  assertCovers,
  type ConformanceCheckContext,
  ConformanceCheckError,
  checkAbortHonoured,
  checkChangeTrackerModel,
  checkCloseReleases,
} from './conformance-checks.js';
export type { DriverConformanceFixtures, DriverConformanceOptions, SourceVMSpec } from './conformance-types.js';
export { createMemoryDriver, type MemoryDriverOptions } from './create-memory-driver.js';
export { runDriverConformance } from './driver-conformance.js';
export { checkEngineEndToEnd, type EngineCheckOptions } from './engine-check.js';
export { defineFailoverCases, type FailoverCaseEnv } from './failover-checks.js';
export { MEMORY_BLOCK_SIZE, type MemoryDriver, memoryFixtures } from './memory-driver.js';
export type { MemoryDriverFaults, MemoryTrackerFaults } from './memory-faults.js';
export { defineReverseCases } from './reverse-checks.js';
export {
  runStateStoreConformance,
  type StateStoreConformanceOptions,
  sampleJournal,
} from './state-store-conformance.js';

export { compareBytes, firstDifference, readWholeDisk, testPattern } from './test-data.js';
export { checkCapabilitiesAgree, checkConcurrentWrites } from './write-and-capability-checks.js';
