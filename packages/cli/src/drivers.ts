import { BUILTIN_DRIVER_KINDS, defaultDriverRegistry, type JobSpec } from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';

/**
 * Registers the drivers the CLI ships with (the file driver) in the default registry, once. The
 * agent asks for a file driver confined to its root through the driver's own `confine` option.
 */
export function registerBuiltinDrivers(): void {
  if (!defaultDriverRegistry.has(fileDriver.kind)) defaultDriverRegistry.register(fileDriver);
}

/** The npm package that provides the driver of a kind replikit knows: `@replikit/driver-<kind>`. */
export function driverPackageOf(kind: string): string {
  return `@replikit/driver-${kind}`;
}

/**
 * Registers the built-in drivers, then loads the driver package of each kind of `job` that replikit
 * knows but that is not registered yet (`@replikit/driver-xen`…; importing it registers its kind).
 * Resolves with the kinds whose package is not installed: a run of the job would stop on them.
 * The sides whose driver is registered are checked against their driver's options schema.
 *
 * @throws `E_JOB` naming the first bad field of a side whose driver is registered
 * (`source.rooot: unknown field`).
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
  defaultDriverRegistry.checkJob(job);
  return missing;
}
