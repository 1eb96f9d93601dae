import { BUILTIN_DRIVER_KINDS, defaultDriverRegistry, type JobSpec } from '@replikit/core';
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

/** The npm package that provides the driver of a kind replikit knows: `@replikit/driver-<kind>`. */
export function driverPackageOf(kind: string): string {
  return `@replikit/driver-${kind}`;
}

/**
 * Registers the built-in drivers, then loads the driver package of each kind of `job` that replikit
 * knows but that is not registered yet (`@replikit/driver-xen`…; importing it registers its kind).
 * Resolves with the kinds whose package is not installed: a run of the job would stop on them.
 */
export async function loadDriverPackages(job: JobSpec): Promise<string[]> {
  registerBuiltinDrivers();
  const missing: string[] = [];
  for (const kind of new Set([job.source.driver, job.target.driver])) {
    if (defaultDriverRegistry.has(kind) || !BUILTIN_DRIVER_KINDS.has(kind)) continue;
    try {
      await import(driverPackageOf(kind));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    }
    if (!defaultDriverRegistry.has(kind)) missing.push(kind);
  }
  return missing;
}
