import type { Hypervisor } from '../../src/contracts/hypervisor.js';
import { type DriverDefinition, defineDriver } from '../../src/drivers/define-driver.js';

/**
 * A driver of `kind` that takes no options and hands out the driver `make` returns (an instance a
 * test built and inspects), declaring that driver's own capabilities.
 */
export function instanceDriver(kind: string, make: () => Hypervisor): DriverDefinition {
  return defineDriver({ kind, capabilities: make().capabilities, create: make });
}
