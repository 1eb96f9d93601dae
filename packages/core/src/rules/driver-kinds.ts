import type { Capabilities } from '../contracts/capabilities.js';
import { InputError } from '../errors.js';

/** What a driver kind looks like: lower-case letters, digits and dashes, starting with a letter. */
export const KIND_PATTERN = /^[a-z][a-z0-9-]*$/;

/** A frozen copy of `capabilities`, lists included. */
export function frozenCapabilities(capabilities: Capabilities): Capabilities {
  return Object.freeze({
    ...capabilities,
    methods: Object.freeze([...capabilities.methods]),
    formats: Object.freeze([...capabilities.formats]),
  });
}

/**
 * The driver kinds replikit knows without loading any driver package, so that a job can be judged
 * offline. `cbt` on `hyperv` means Resilient Change Tracking (RCT). A driver of one of these kinds
 * declares the same capabilities in its `defineDriver` (each driver package tests that it does).
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
      failover: true,
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
      failover: true,
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
      failover: true,
      fencing: true,
    }),
  ],
]);

/**
 * Throws when `capabilities` is not a well-formed {@link Capabilities} object (a driver written in
 * JavaScript may pass anything).
 *
 * @throws {@link InputError} listing every problem.
 */
export function checkCapabilities(kind: string, capabilities: Capabilities): void {
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
