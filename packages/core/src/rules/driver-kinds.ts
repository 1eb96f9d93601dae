import type { Capabilities } from '../contracts/capabilities.js';
import { InputError } from '../errors.js';

const KIND_PATTERN = /^[a-z][a-z0-9-]*$/;

function frozenCapabilities(capabilities: Capabilities): Capabilities {
  return Object.freeze({
    ...capabilities,
    methods: Object.freeze([...capabilities.methods]),
    formats: Object.freeze([...capabilities.formats]),
  });
}

/**
 * The driver kinds replikit knows without loading any driver package, so that a job can be judged
 * offline. `cbt` on `hyperv` means Resilient Change Tracking (RCT).
 */
export const BUILTIN_DRIVER_KINDS: ReadonlyMap<string, Capabilities> = new Map([
  [
    'xen',
    frozenCapabilities({
      methods: ['xva', 'abd', 'qhybrid', 'cbt'],
      canBeSource: true,
      canBeTarget: true,
      changeTracking: true,
      formats: ['vhd', 'xva', 'raw'],
      restorePoints: true,
    }),
  ],
  [
    'hyperv',
    frozenCapabilities({
      methods: ['qhybrid', 'cbt'],
      canBeSource: true,
      canBeTarget: true,
      changeTracking: true,
      formats: ['vhdx', 'vhd'],
      restorePoints: true,
    }),
  ],
  [
    'file',
    frozenCapabilities({
      methods: ['qhybrid'],
      canBeSource: true,
      canBeTarget: true,
      changeTracking: true,
      formats: ['raw'],
      restorePoints: true,
    }),
  ],
]);

/** Options of {@link DriverKindRegistry.register}. */
export interface RegisterDriverKindOptions {
  /**
   * Allow replacing a built-in kind or a kind registered earlier.
   * @default false
   */
  override?: boolean;
}

function checkCapabilities(kind: string, capabilities: Capabilities): void {
  const isStringList = (value: unknown) => Array.isArray(value) && value.every((item) => typeof item === 'string');
  const problems = [
    !isStringList(capabilities?.methods) && 'methods must be a list of method names',
    !isStringList(capabilities?.formats) && 'formats must be a list of format names',
    ...(['canBeSource', 'canBeTarget', 'changeTracking', 'restorePoints'] as const).map(
      (flag) => typeof capabilities?.[flag] !== 'boolean' && `${flag} must be true or false`,
    ),
  ].filter((problem): problem is string => typeof problem === 'string');
  if (problems.length > 0) {
    throw new InputError(`driver kind '${kind}': ${problems.join('; ')}`, { details: { kind, problems } });
  }
}

/**
 * The driver kinds a process knows: the built-in ones plus those that third-party drivers declare.
 * Most code uses the process-wide registry through {@link registerDriverKind} and
 * {@link driverKinds}; tests can build their own.
 *
 * @example
 * ```ts
 * const registry = new DriverKindRegistry();
 * registry.register('vmware', { methods: ['qhybrid'], canBeSource: true, canBeTarget: false,
 *   changeTracking: true, formats: ['vmdk'], restorePoints: false });
 * validateJob(job, { kinds: registry.kinds() });
 * ```
 */
export class DriverKindRegistry {
  readonly #registered = new Map<string, Capabilities>();

  /**
   * Declares what driver kind `kind` can do. Replacing a built-in kind or a kind registered
   * earlier needs `{ override: true }`.
   *
   * @throws {@link InputError} when `kind` is not lower-case letters, digits and dashes, when the
   * capabilities are malformed, or when the kind exists and `override` is not set.
   */
  register(kind: string, capabilities: Capabilities, options: RegisterDriverKindOptions = {}): void {
    if (typeof kind !== 'string' || !KIND_PATTERN.test(kind)) {
      throw new InputError(`driver kind '${String(kind)}': a kind is lower-case letters, digits and dashes`);
    }
    checkCapabilities(kind, capabilities);
    if (!options.override && (BUILTIN_DRIVER_KINDS.has(kind) || this.#registered.has(kind))) {
      const which = BUILTIN_DRIVER_KINDS.has(kind) ? 'a built-in kind' : 'already registered';
      throw new InputError(`driver kind '${kind}' is ${which}; pass { override: true } to replace it`, {
        details: { kind },
      });
    }
    this.#registered.set(kind, frozenCapabilities(capabilities));
  }

  /** The capabilities of `kind`, or `undefined` when it is unknown. */
  get(kind: string): Capabilities | undefined {
    return this.#registered.get(kind) ?? BUILTIN_DRIVER_KINDS.get(kind);
  }

  /** A snapshot of every known kind: built-in kinds, replaced or extended by registered ones. */
  kinds(): ReadonlyMap<string, Capabilities> {
    return new Map([...BUILTIN_DRIVER_KINDS, ...this.#registered]);
  }
}

const processRegistry = new DriverKindRegistry();

/**
 * Declares a driver kind in the process-wide registry, so that jobs naming it can be validated.
 * A driver package calls this once, next to `registerDriver`.
 *
 * @throws {@link InputError} as {@link DriverKindRegistry.register} does.
 */
export function registerDriverKind(
  kind: string,
  capabilities: Capabilities,
  options?: RegisterDriverKindOptions,
): void {
  processRegistry.register(kind, capabilities, options);
}

/** Every driver kind the process knows (built-in and registered); the validator's default. */
export function driverKinds(): ReadonlyMap<string, Capabilities> {
  return processRegistry.kinds();
}
