import { type MemoryDriver, MemoryHypervisor } from './memory-driver.js';
import { FaultyMemoryHypervisor, type MemoryDriverFaults } from './memory-faults.js';

/** Options of {@link createMemoryDriver}. */
export interface MemoryDriverOptions {
  /** Faults to inject (tests of the suite only). */
  faults?: MemoryDriverFaults;
}

/**
 * Creates the memory reference driver of `@replikit/core/testing`, written on
 * {@link AbstractHypervisor}: disks in memory, block-level change tracking from a write log,
 * pending replica writes kept apart from the last restore point, replica holds. The base does the
 * rest (closed state, argument checks, cancellation, `close()` closing what it handed out, one
 * writer per disk, label idempotence and retention). It runs the conformance suite; copy its shape
 * when writing a driver.
 */
export function createMemoryDriver(options: MemoryDriverOptions = {}): MemoryDriver {
  return options.faults ? new FaultyMemoryHypervisor(options.faults) : new MemoryHypervisor();
}
