import { defaultDriverRegistry } from '@replikit/core';
import { createFileDriver } from '@replikit/driver-file';

/** Registers the drivers the CLI ships with (the file driver) in the default registry, once. */
export function registerBuiltinDrivers(): void {
  if (!defaultDriverRegistry.has('file')) {
    defaultDriverRegistry.register('file', (options) => createFileDriver({ root: String(options.root ?? '.') }));
  }
}
