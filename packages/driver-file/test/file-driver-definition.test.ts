import { join } from 'node:path';
import { BUILTIN_DRIVER_KINDS, DriverRegistry, isReplikitError } from '@replikit/core';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileVM, fileDriver } from '../src/index.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

describe('fileDriver (the definition)', () => {
  afterAll(removeTempRoots);

  it("declares exactly core's built-in row for kind 'file', and so does the driver it creates", async () => {
    expect(fileDriver.kind).toBe('file');
    expect(fileDriver.capabilities).toEqual(BUILTIN_DRIVER_KINDS.get('file'));
    const root = await makeTempRoot();
    const hv = await new DriverRegistry().register(fileDriver).create({ driver: 'file', root }, { side: 'target' });
    try {
      expect(hv.kind).toBe(fileDriver.kind);
      expect(hv.capabilities).toEqual(fileDriver.capabilities);
    } finally {
      await hv.close();
    }
  });

  it('creates a driver on the root the job names, with the defaults of its schema', async () => {
    const root = await makeTempRoot();
    await createFileVM(join(root, 'vms'), { name: 'web', disks: [{ id: 'system', size: 65536 }] });
    const registry = new DriverRegistry().register(fileDriver);
    expect(registry.parseOptions({ driver: 'file', root: '/srv', vm: 'web' }, { side: 'source' })).toEqual({
      root: '/srv',
      confine: false,
      reflink: true,
    });
    const hv = await registry.create({ driver: 'file', root: join(root, 'vms'), vm: 'web' }, { side: 'source' });
    try {
      expect((await hv.getVM('web')).name).toBe('web');
    } finally {
      await hv.close();
    }
  });

  it('names a misspelt or missing field of a side (E_JOB, one line)', () => {
    const registry = new DriverRegistry().register(fileDriver);
    const error = (() => {
      try {
        registry.parseOptions({ driver: 'file', rooot: 'x', vm: 'web' }, { side: 'source' });
      } catch (caught) {
        return caught;
      }
    })();
    expect(isReplikitError(error, 'E_JOB')).toBe(true);
    expect((error as Error).message).toMatch(/source\.root: expected the folder .*; source\.rooot: unknown field/);
    expect((error as Error).message).toContain("(driver 'file' takes root, confine, reflink)");
  });
});
