import { z } from 'zod';
import type { Capabilities } from '../contracts/capabilities.js';
import type { Hypervisor } from '../contracts/hypervisor.js';
import { InputError } from '../errors.js';
import { checkCapabilities, frozenCapabilities, KIND_PATTERN } from '../rules/driver-kinds.js';

/** Which side of a job a driver serves. */
export type JobSide = 'source' | 'target';

/** What {@link DriverDefinition.create} is told besides the parsed options. */
export interface DriverContext {
  /** The kind the driver is created for (the job's `driver` field). */
  kind: string;
  /** The side of the job the driver serves; absent when it is created outside a job (an agent). */
  side?: JobSide;
  /**
   * The job's replication method (`qhybrid`, `cbt`, `abd`, `xva` or a driver's own); absent outside
   * a job. A driver whose data path depends on the method (a delegate appliance for `abd`, a whole-VM
   * export for `xva`) reads it here.
   */
  method?: string;
  /** The job's `options.direction`: `push` (the default) or `pull`; absent outside a job. */
  direction?: 'push' | 'pull';
}

/**
 * A driver as a value: its kind, what it can do, the schema of its options and how to create it.
 * Made by {@link defineDriver}, registered with `registerDriver(definition)`; a driver package
 * exports one (the file driver's is `fileDriver`).
 */
export interface DriverDefinition<Options = unknown> {
  /** The kind a job names in `source.driver` / `target.driver`: lower-case letters, digits, dashes. */
  readonly kind: string;
  /**
   * What the driver can do. For a kind core knows (`file`, `xen`, `hyperv`) it equals core's
   * `BUILTIN_DRIVER_KINDS` row, which judges jobs offline before the package is loaded.
   */
  readonly capabilities: Capabilities;
  /**
   * The zod schema of the driver's section of a job: the fields of `source` (or `target`) besides
   * the ones core owns (`driver`, and `vm` or `replicaName`). A strict object, so that a misspelt
   * field is reported by name.
   */
  readonly options: z.ZodType<Options>;
  /** Creates a driver from the options the `options` schema has parsed (defaults applied). */
  create(options: Options, context: DriverContext): Hypervisor | Promise<Hypervisor>;
}

/** What {@link defineDriver} takes: a {@link DriverDefinition} whose `options` may be left out. */
export interface DriverDefinitionInit<Options> {
  /** See {@link DriverDefinition.kind}. */
  kind: string;
  /** See {@link DriverDefinition.capabilities}. */
  capabilities: Capabilities;
  /**
   * See {@link DriverDefinition.options}.
   * @default z.strictObject({}) (the driver takes no options: any field is reported as unknown)
   */
  options?: z.ZodType<Options>;
  /** See {@link DriverDefinition.create}. */
  create(options: Options, context: DriverContext): Hypervisor | Promise<Hypervisor>;
}

/** The options of a driver that takes none. */
export type NoOptions = Record<string, never>;

/**
 * Defines a driver: checks the definition once (kind, capabilities, schema) and returns it frozen.
 * `create` receives the options as `options` parsed them, typed, so a driver never coerces fields
 * of a job by hand.
 *
 * @example
 * ```ts
 * import { defineDriver, registerDriver } from '@replikit/core';
 * import { z } from 'zod';
 *
 * export const acmeDriver = defineDriver({
 *   kind: 'acme',
 *   capabilities: { methods: ['qhybrid'], canBeSource: true, canBeTarget: false,
 *     changeTracking: false, formats: ['raw'], restorePoints: false },
 *   options: z.strictObject({ host: z.string().min(1), port: z.number().int().default(443) }),
 *   create: (options) => createAcmeDriver(options), // options: { host: string; port: number }
 * });
 * registerDriver(acmeDriver);
 * ```
 * @throws {@link InputError} when the kind is not lower-case letters, digits and dashes, when the
 * capabilities are malformed, when `options` is not a zod schema or `create` not a function.
 */
export function defineDriver<Options = NoOptions>(init: DriverDefinitionInit<Options>): DriverDefinition<Options> {
  const kind = init?.kind;
  if (typeof kind !== 'string' || !KIND_PATTERN.test(kind)) {
    throw new InputError(`defineDriver: kind '${String(kind)}' must be lower-case letters, digits and dashes`);
  }
  checkCapabilities(kind, init.capabilities);
  const options = init.options ?? (z.strictObject({}) as unknown as z.ZodType<Options>);
  // Duck-typed: a driver package may bring its own copy of zod.
  if (typeof (options as { safeParse?: unknown })?.safeParse !== 'function') {
    throw new InputError(`defineDriver: the options of driver '${kind}' must be a zod schema (z.strictObject({…}))`);
  }
  if (typeof init.create !== 'function') {
    throw new InputError(`defineDriver: driver '${kind}' needs a create(options, context) function`);
  }
  const create = init.create;
  return Object.freeze({
    kind,
    capabilities: frozenCapabilities(init.capabilities),
    options,
    create: (parsed: Options, context: DriverContext) => create(parsed, context),
  });
}

/** True when `value` has the shape of a {@link DriverDefinition}. */
export function isDriverDefinition(value: unknown): value is DriverDefinition {
  const candidate = value as Partial<DriverDefinition> | null;
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.kind === 'string' &&
    typeof candidate.create === 'function' &&
    typeof (candidate.options as { safeParse?: unknown } | undefined)?.safeParse === 'function'
  );
}
