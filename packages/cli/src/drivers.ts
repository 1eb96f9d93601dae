import { defaultDriverRegistry } from '@replikit/core';
import { createFileDriver } from '@replikit/driver-file';

/**
 * Registers the drivers the CLI ships with (the file driver) in the default registry, once. An
 * endpoint with `confine: true` (what `replikit-agent` asks for) gets a driver that refuses any
 * folder outside its root.
 */
export function registerBuiltinDrivers(): void {
  if (!defaultDriverRegistry.has('file')) {
    defaultDriverRegistry.register('file', (options) =>
      createFileDriver({
        root: String(options.root ?? '.'),
        confine: (options as { confine?: unknown }).confine === true,
      }),
    );
  }
}
