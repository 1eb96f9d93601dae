import type { Capabilities } from '../contracts/capabilities.js';
import type { Hypervisor } from '../contracts/hypervisor.js';
import {
  type DriverContext,
  type DriverDefinition,
  isDriverDefinition,
  type JobSide,
} from '../drivers/define-driver.js';
import { InputError, isReplikitError, JobError, NotFoundError } from '../errors.js';
import { CORE_ENDPOINT_FIELDS, type EndpointSpec, type JobSpec } from '../job/job-spec.js';
import { toIssues } from '../job/zod-issues.js';
import { BUILTIN_DRIVER_KINDS } from '../rules/driver-kinds.js';

/** Options of {@link DriverRegistry.register}. */
export interface RegisterDriverOptions {
  /**
   * Replace a driver registered earlier under the same kind.
   * @default false
   */
  replace?: boolean;
}

/** Options of {@link DriverRegistry.create}. */
export interface CreateDriverOptions {
  /** The side of the job the endpoint is; error messages name its fields `source.x` / `target.x`. */
  side?: JobSide;
  /** The job's method, handed to the driver's `create` (see {@link DriverContext.method}). */
  method?: string;
  /** The job's direction, handed to the driver's `create` (see {@link DriverContext.direction}). */
  direction?: 'push' | 'pull';
}

/** The fields of `endpoint` that are the driver's, not core's. */
function driverFieldsOf(endpoint: EndpointSpec, side: JobSide | undefined): Record<string, unknown> {
  const owned = new Set<string>(
    side ? CORE_ENDPOINT_FIELDS[side] : [...CORE_ENDPOINT_FIELDS.source, ...CORE_ENDPOINT_FIELDS.target],
  );
  return Object.fromEntries(Object.entries(endpoint).filter(([field]) => !owned.has(field)));
}

/** The fields a strict object schema knows, for the hint after an unknown field. */
function knownFields(definition: DriverDefinition): string[] {
  const shape = (definition.options as { shape?: unknown }).shape;
  return shape !== null && typeof shape === 'object' ? Object.keys(shape) : [];
}

/**
 * The drivers a process (or an engine) can create, keyed by kind, together with core's built-in
 * table of kinds so that jobs are judged offline. One registration per driver:
 * `register(definition)` with a {@link DriverDefinition} made by `defineDriver`.
 *
 * @example
 * ```ts
 * import { fileDriver } from '@replikit/driver-file';
 *
 * const drivers = new DriverRegistry().register(fileDriver);
 * const engine = new ReplicationEngine({ stateStore, drivers });
 * ```
 */
export class DriverRegistry {
  readonly #definitions = new Map<string, DriverDefinition>();

  /**
   * Registers a driver under its kind.
   * @throws {@link InputError} when `definition` was not made by `defineDriver`, or when its kind is
   * already registered and `replace` is not set.
   */
  register(definition: DriverDefinition, options: RegisterDriverOptions = {}): this {
    if (!isDriverDefinition(definition)) {
      throw new InputError(
        'register takes a driver definition made by defineDriver({ kind, capabilities, options, create }); a (kind, factory) pair is no longer accepted',
      );
    }
    if (this.#definitions.has(definition.kind) && !options.replace) {
      throw new InputError(
        `a driver of kind '${definition.kind}' is already registered; pass { replace: true } to replace it`,
      );
    }
    this.#definitions.set(definition.kind, definition);
    return this;
  }

  /** True when a driver of `kind` is registered. */
  has(kind: string): boolean {
    return this.#definitions.has(kind);
  }

  /** The definition registered for `kind`, if any. */
  get(kind: string): DriverDefinition | undefined {
    return this.#definitions.get(kind);
  }

  /** The registered kinds. */
  kinds(): string[] {
    return [...this.#definitions.keys()];
  }

  /**
   * The capabilities of every kind this registry can judge: core's built-in table, where a
   * registered driver's own declaration takes the place of its kind's row. The rule validator's
   * default `kinds`.
   */
  capabilities(): ReadonlyMap<string, Capabilities> {
    const registered = [...this.#definitions.values()].map((d) => [d.kind, d.capabilities] as const);
    return new Map([...BUILTIN_DRIVER_KINDS, ...registered]);
  }

  /**
   * Parses the driver's fields of a job's side with the schema of its kind, defaults applied.
   *
   * @throws {@link JobError} (with `side`) or {@link InputError} (without) in one line naming every
   * bad field: `source.rooot: unknown field (driver 'file' takes root, confine, reflink)`.
   * @throws {@link NotFoundError} when no driver of the kind is registered.
   */
  parseOptions(endpoint: EndpointSpec, options: CreateDriverOptions = {}): unknown {
    const definition = this.definitionOf(endpoint.driver);
    const fields = driverFieldsOf(endpoint, options.side);
    const result = definition.options.safeParse(fields);
    if (result.success) return result.data;
    const issues = toIssues(result.error, fields, { unknownFields: 'each' });
    const at = options.side ? `${options.side}.` : '';
    const whole = options.side ?? `the options of driver '${definition.kind}'`;
    const problems = issues.map((issue) => `${issue.path === '(job)' ? whole : at + issue.path}: ${issue.message}`);
    const known = knownFields(definition);
    const hint =
      issues.some((issue) => issue.message === 'unknown field') && known.length > 0
        ? ` (driver '${definition.kind}' takes ${known.join(', ')})`
        : '';
    const message = `${problems.join('; ')}${hint}`;
    const details = { kind: definition.kind, side: options.side, issues };
    throw options.side ? new JobError(message, { details }) : new InputError(message, { details });
  }

  /**
   * Checks the driver fields of both sides of `job` whose kind is registered (a kind that is not
   * registered is left to {@link create} to report, or to the rules to judge offline).
   *
   * @throws {@link JobError} in one line naming the bad fields of both sides.
   */
  checkJob(job: JobSpec): void {
    const failures: JobError[] = [];
    for (const side of ['source', 'target'] as const) {
      if (!this.has(job[side].driver)) continue;
      try {
        this.parseOptions(job[side], { side });
      } catch (error) {
        // By code, not class: a driver's own check may throw from another copy of @replikit/core.
        if (!isReplikitError(error, 'E_JOB')) throw error;
        failures.push(error as JobError);
      }
    }
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) {
      throw new JobError(failures.map((failure) => failure.message).join('; '), {
        details: { sides: failures.map((failure) => failure.details) },
      });
    }
  }

  /**
   * Creates the driver of a job's side: parses its fields with the driver's schema, then calls the
   * driver's `create` with the typed result.
   *
   * @throws {@link NotFoundError} when no driver of its kind is registered.
   * @throws {@link JobError} / {@link InputError} when its fields do not match the driver's schema.
   */
  async create(endpoint: EndpointSpec, options: CreateDriverOptions = {}): Promise<Hypervisor> {
    const definition = this.definitionOf(endpoint.driver);
    const parsed = this.parseOptions(endpoint, options);
    const context: DriverContext = { kind: definition.kind };
    if (options.side) context.side = options.side;
    if (options.method) context.method = options.method;
    if (options.direction) context.direction = options.direction;
    return definition.create(parsed, context);
  }

  private definitionOf(kind: string): DriverDefinition {
    const definition = this.#definitions.get(kind);
    if (!definition) {
      const known = this.kinds();
      throw new NotFoundError(
        `no driver of kind '${kind}' is registered${known.length ? ` (known: ${known.join(', ')})` : ''}; install its package and register its definition`,
        { details: { kind } },
      );
    }
    return definition;
  }
}

/** The process-wide registry used when an engine is given none. */
export const defaultDriverRegistry = new DriverRegistry();

/**
 * Registers a driver in the {@link defaultDriverRegistry}: what a driver package's users call once.
 *
 * @example
 * ```ts
 * import { registerDriver } from '@replikit/core';
 * import { fileDriver } from '@replikit/driver-file';
 *
 * registerDriver(fileDriver);
 * ```
 * @throws {@link InputError} as {@link DriverRegistry.register} does.
 */
export function registerDriver(definition: DriverDefinition, options?: RegisterDriverOptions): void {
  defaultDriverRegistry.register(definition, options);
}

/**
 * Every driver kind the process can judge: core's built-in table with the registered drivers'
 * own capabilities in place of their rows. The rule validator's default.
 */
export function driverKinds(): ReadonlyMap<string, Capabilities> {
  return defaultDriverRegistry.capabilities();
}
