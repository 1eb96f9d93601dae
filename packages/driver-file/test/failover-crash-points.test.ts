import { describe, expect, it } from 'vitest';
import { failoverCrashPoints } from './helpers/crash-points.js';

describe('kills per failover operation in the SIGKILL matrix', () => {
  const ops = ['test', 'unplanned', 'undo', 'planned', 'commit', 'permanent'] as const;

  it('is 10 for every operation by default, commit and permanent included', () => {
    for (const op of ops) expect(failoverCrashPoints(op, {}), op).toBe(10);
  });

  it('honours REPLIKIT_CRASH_POINTS as a cap and REPLIKIT_FAILOVER_CRASH_POINTS as a raise', () => {
    for (const op of ops) {
      expect(failoverCrashPoints(op, { REPLIKIT_CRASH_POINTS: '4' }), op).toBe(4);
      expect(failoverCrashPoints(op, { REPLIKIT_FAILOVER_CRASH_POINTS: '25' }), op).toBe(25);
      expect(failoverCrashPoints(op, { REPLIKIT_FAILOVER_CRASH_POINTS: '3' }), op).toBe(10);
    }
  });
});
