import { type DriverDefinition, defaultDriverRegistry, isDriverDefinition, type JobSpec } from '@replikit/core';
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

/** How {@link loadDriverPackages} imports a driver package (replaced in tests). */
export type DriverPackageImporter = (name: string) => Promise<Record<string, unknown>>;

/**
 * The driver packages the CLI depends on, each imported by a literal name: the bundled
 * `replikit` executable then holds them, with the one copy of @replikit/core its engine uses,
 * instead of loading a second copy from node_modules (whose error classes and objects the
 * engine's `instanceof` checks would not recognise).
 */
const SHIPPED_DRIVER_PACKAGES = new Map<string, () => Promise<Record<string, unknown>>>([
  ['@replikit/driver-xen', () => import('@replikit/driver-xen')],
  ['@replikit/driver-hyperv', () => import('@replikit/driver-hyperv')],
]);

/** Imports the driver package `name`: a shipped one as above, any other by its name. */
const importDriverPackage: DriverPackageImporter = (name) => SHIPPED_DRIVER_PACKAGES.get(name)?.() ?? import(name);

/** True when `error` says that the package `name` itself is not installed (not one of its imports). */
function isPackageMissing(error: unknown, name: string): boolean {
  const { code, message } = error as NodeJS.ErrnoException;
  return code === 'ERR_MODULE_NOT_FOUND' && typeof message === 'string' && message.includes(`'${name}'`);
}

/**
 * Registers the built-in drivers, then, for each kind of `job` that is not registered yet, imports
 * its package `@replikit/driver-<kind>` (resolved beside the CLI) and registers the definition it
 * exports for that kind (`defineDriver(...)`, as any export), unless importing it registered the
 * kind already. Resolves with the kinds still unregistered: a run of the job would stop on them.
 * The sides whose driver is registered are checked against their driver's options schema.
 *
 * @throws `E_JOB` naming the first bad field of a side whose driver is registered
 * (`source.rooot: unknown field`); a driver package that fails while loading rejects with its error.
 */
export async function loadDriverPackages(
  job: JobSpec,
  importer: DriverPackageImporter = importDriverPackage,
): Promise<string[]> {
  registerBuiltinDrivers();
  const missing: string[] = [];
  for (const kind of new Set([job.source.driver, job.target.driver])) {
    if (defaultDriverRegistry.has(kind)) continue;
    const name = driverPackageOf(kind);
    let exported: Record<string, unknown> | undefined;
    try {
      exported = await importer(name);
    } catch (error) {
      if (!isPackageMissing(error, name)) throw error;
    }
    if (exported && !defaultDriverRegistry.has(kind)) {
      const definition = Object.values(exported).find(
        (value): value is DriverDefinition => isDriverDefinition(value) && value.kind === kind,
      );
      if (definition) defaultDriverRegistry.register(definition);
    }
    if (!defaultDriverRegistry.has(kind)) missing.push(kind);
  }
  defaultDriverRegistry.checkJob(job);
  return missing;
}
