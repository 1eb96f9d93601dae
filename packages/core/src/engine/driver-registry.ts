import type { Hypervisor } from '../contracts/hypervisor.js';
import { InputError, NotFoundError } from '../errors.js';
import type { EndpointSpec } from '../job/job-spec.js';

/**
 * Creates a driver from a job's `source` or `target` section (its `driver` field names the kind;
 * the other fields are the driver's options).
 */
export type DriverFactory = (options: EndpointSpec) => Hypervisor | Promise<Hypervisor>;

/** Maps driver kinds to factories. Third-party drivers register themselves here. */
export class DriverRegistry {
  private readonly factories = new Map<string, DriverFactory>();

  /**
   * Registers the factory of a kind.
   * @throws {@link InputError} when the kind is already registered and `replace` is not set.
   */
  register(kind: string, factory: DriverFactory, options: { replace?: boolean } = {}): this {
    if (this.factories.has(kind) && !options.replace) {
      throw new InputError(`a driver of kind '${kind}' is already registered; pass { replace: true } to replace it`);
    }
    this.factories.set(kind, factory);
    return this;
  }

  /** True when a factory is registered for `kind`. */
  has(kind: string): boolean {
    return this.factories.has(kind);
  }

  /** The registered kinds. */
  kinds(): string[] {
    return [...this.factories.keys()];
  }

  /**
   * Creates a driver for a job's endpoint.
   * @throws {@link NotFoundError} when no factory is registered for its kind.
   */
  async create(endpoint: EndpointSpec): Promise<Hypervisor> {
    const factory = this.factories.get(endpoint.driver);
    if (!factory) {
      const known = this.kinds();
      throw new NotFoundError(
        `no driver of kind '${endpoint.driver}' is registered${known.length ? ` (known: ${known.join(', ')})` : ''}; install and register its package`,
      );
    }
    return factory(endpoint);
  }
}

/** The process-wide registry used when an engine is given none. */
export const defaultDriverRegistry = new DriverRegistry();

/** Registers a driver kind in the {@link defaultDriverRegistry}. */
export function registerDriver(kind: string, factory: DriverFactory, options?: { replace?: boolean }): void {
  defaultDriverRegistry.register(kind, factory, options);
}
