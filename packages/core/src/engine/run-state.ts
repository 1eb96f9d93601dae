import { StateError } from '../errors.js';

/**
 * The states of a run, in the order of DESIGN.md section 1. `completed`, `failed` and `cancelled`
 * are terminal; `cleanup` is entered from every path, so it always runs.
 */
export type RunState =
  | 'created'
  | 'validate'
  | 'prepare'
  | 'snapshot'
  | 'plan'
  | 'transfer'
  | 'commit'
  | 'cleanup'
  | 'completed'
  | 'failed'
  | 'cancelled';

/** How a run ended. */
export type RunOutcome = 'completed' | 'failed' | 'cancelled';

const TRANSITIONS: Readonly<Record<RunState, readonly RunState[]>> = {
  created: ['validate'],
  validate: ['prepare', 'cleanup'],
  prepare: ['snapshot', 'cleanup'],
  snapshot: ['plan', 'cleanup'],
  plan: ['transfer', 'cleanup'],
  transfer: ['commit', 'cleanup'],
  commit: ['cleanup'],
  cleanup: ['completed', 'failed', 'cancelled'],
  completed: [],
  failed: [],
  cancelled: [],
};

/** True for the states a run ends in. */
export function isTerminal(state: RunState): state is RunOutcome {
  return state === 'completed' || state === 'failed' || state === 'cancelled';
}

/** True when `from → to` is a transition of the run state machine. */
export function canTransition(from: RunState, to: RunState): boolean {
  return TRANSITIONS[from].includes(to);
}

/**
 * Checks a transition.
 *
 * @throws {@link StateError} (`E_STATE`) when `from → to` is not a transition of the machine.
 */
export function assertTransition(from: RunState, to: RunState): void {
  if (!canTransition(from, to)) {
    const allowed = TRANSITIONS[from];
    throw new StateError(
      `invalid run transition ${from} → ${to}; from ${from} a run can go to ${allowed.length ? allowed.join(', ') : 'nothing (it has ended)'}`,
      { details: { from, to } },
    );
  }
}

/** The states that touch the replica: a run stopped in one of them must be resumed or rolled back. */
export const REPLICA_TOUCHING_STATES: readonly RunState[] = ['transfer', 'commit'];
