import { isReplikitError, parseJob } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { checkRunLimits, endpointKey, limitWantsOf } from '../src/index.js';

const job = (source: Record<string, unknown>, target: Record<string, unknown>) =>
  parseJob({ name: 'web', source: { vm: 'web', ...source }, target, method: 'qhybrid' } as never);

describe('run-limit keys', () => {
  it('a side’s key is its driver and its url, host or root (the first set); the driver alone without one', () => {
    expect(endpointKey({ driver: 'xen', url: 'https://pool1', vm: 'web' })).toBe('xen:https://pool1');
    expect(endpointKey({ driver: 'hyperv', host: 'hv1.example', vm: 'web' })).toBe('hyperv:hv1.example');
    expect(endpointKey({ driver: 'file', root: '/srv/vms', vm: 'web' })).toBe('file:/srv/vms');
    expect(endpointKey({ driver: 'hyperv', vm: 'web' })).toBe('hyperv');
  });

  it('a job counts against its source host for perHost and its target for perTarget; keyOf replaces the key', () => {
    const spec = job({ driver: 'xen', url: 'https://pool1' }, { driver: 'file', root: '/srv/replicas' });
    expect(limitWantsOf(spec, undefined)).toEqual([]);
    expect(limitWantsOf(spec, { perHost: 2, perTarget: 1 })).toEqual([
      { scope: 'host', key: 'xen:https://pool1', limit: 2 },
      { scope: 'target', key: 'file:/srv/replicas', limit: 1 },
    ]);
    expect(limitWantsOf(spec, { perTarget: 3, keyOf: (_job, scope) => `${scope}-all` })).toEqual([
      { scope: 'target', key: 'target-all', limit: 3 },
    ]);
  });

  it('refuses a limit that is not a whole number ≥ 1 and a poll under 10 ms (E_INPUT)', () => {
    for (const limits of [{ perHost: 0 }, { perTarget: 1.5 }, { perTarget: Number.NaN }, { pollMs: 1 }]) {
      let error: unknown;
      try {
        checkRunLimits(limits);
      } catch (caught) {
        error = caught;
      }
      expect(isReplikitError(error, 'E_INPUT'), JSON.stringify(limits)).toBe(true);
    }
    expect(() => checkRunLimits({ perHost: 1, perTarget: 64, pollMs: 10 })).not.toThrow();
  });
});
