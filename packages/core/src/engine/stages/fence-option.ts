import type { TargetFence } from '../../contracts/hypervisor.js';
import type { RunContext } from './stage.js';

/**
 * The run's lease fence as target options (claim, commit, revert): a fencing target refuses a
 * stale worker's operation. Empty when the run holds no lease.
 */
export function fenced(ctx: RunContext): { fence?: TargetFence } {
  return ctx.deps.fence ? { fence: ctx.deps.fence } : {};
}
