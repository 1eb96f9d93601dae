import { defaultDriverRegistry, defineDriver, type JobSpec, parseJob } from '@replikit/core';
import { createMemoryDriver } from '@replikit/core/testing';
import { describe, expect, it } from 'vitest';
import { loadDriverPackages } from '../src/drivers.js';

function job(kind: string): JobSpec {
  return parseJob({
    name: 'third-party',
    source: { driver: kind, vm: 'web' },
    target: { driver: 'file', root: '/tmp/replicas' },
    method: 'qhybrid',
  });
}

const capabilities = {
  methods: ['qhybrid'],
  canBeSource: true,
  canBeTarget: false,
  changeTracking: false,
  formats: ['raw'],
  restorePoints: false,
};

describe('a third-party driver package, @replikit/driver-<kind>', () => {
  it('is imported for a kind core does not know, and the definition it exports is registered', async () => {
    const asked: string[] = [];
    const acmeDriver = defineDriver({ kind: 'acme-a', capabilities, create: () => createMemoryDriver() });
    const missing = await loadDriverPackages(job('acme-a'), async (name) => {
      asked.push(name);
      return { acmeDriver, somethingElse: 42 };
    });
    expect(asked).toEqual(['@replikit/driver-acme-a']);
    expect(missing).toEqual([]);
    expect(defaultDriverRegistry.has('acme-a')).toBe(true);
  });

  it('is reported missing when it is not installed, and a package that exports no definition of its kind too', async () => {
    const notInstalled = Object.assign(new Error("Cannot find package '@replikit/driver-acme-b'"), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
    expect(await loadDriverPackages(job('acme-b'), () => Promise.reject(notInstalled))).toEqual(['acme-b']);
    const other = defineDriver({ kind: 'acme-other', capabilities, create: () => createMemoryDriver() });
    expect(await loadDriverPackages(job('acme-c'), async () => ({ other }))).toEqual(['acme-c']);
    expect(defaultDriverRegistry.has('acme-other')).toBe(false);
  });

  it('does not hide a package that fails while loading', async () => {
    await expect(loadDriverPackages(job('acme-d'), () => Promise.reject(new SyntaxError('bad token')))).rejects.toThrow(
      'bad token',
    );
  });

  it('finds the Hyper-V driver the CLI ships with, and checks its options', async () => {
    expect(await loadDriverPackages(job('hyperv'))).toEqual([]);
    expect(defaultDriverRegistry.has('hyperv')).toBe(true);
    const bad = parseJob({
      name: 'hv',
      source: { driver: 'hyperv', vm: 'web', rtc: false },
      target: { driver: 'file', root: '/tmp/replicas' },
      method: 'qhybrid',
    });
    await expect(loadDriverPackages(bad)).rejects.toThrow(/source\.rtc/);
  });
});
