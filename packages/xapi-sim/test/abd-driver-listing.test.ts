import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { XenAbdDriver } from '../src/abd/abd-driver.js';
import { DEVICE_MAP_FILE, type DeviceMap, parseDeviceMap } from '../src/abd/device-map.js';
import { DeviceMapView } from '../src/abd/device-map-view.js';

/*
 * Issue 17, the ABD crash matrix's `disk … is not plugged into appliance …`: the agent listed its
 * VM from one read of the device map, then looked each disk up again in a fresh read. A disk
 * unplugged in between (another disk's reader closing while this one opens, two disks moving at
 * once) made the whole listing fail with E_NOT_FOUND, naming the disk just unplugged, although
 * the disk asked for was plugged. The listing now comes from one read of the map.
 */

const SR = '11111111-2222-3333-4444-555555555555';
const APPLIANCE = { uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', name: 'abd' };
const A = '0a0a0a0a-0000-4000-8000-000000000001';
const B = '0b0b0b0b-0000-4000-8000-000000000002';

describe('the appliance driver listing its VM', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-abd-list-'));
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists the disks of one read of the device map when a disk is unplugged while it lists', async () => {
    const srDir = join(dir, 'sr');
    await mkdir(srDir);
    for (const vdi of [A, B]) await writeFile(join(srDir, `${vdi}.raw`), new Uint8Array(4096));
    const map = (vdis: string[]): string =>
      JSON.stringify({
        version: 1,
        appliance: APPLIANCE,
        srs: { [SR]: srDir },
        disks: vdis.map((vdi, i) => ({ device: String(i + 1), vdi, sr: SR, size: 4096, mode: 'RW' })),
      });
    // The map as the listing first reads it (A and B plugged); B is unplugged right after.
    const before: DeviceMap = parseDeviceMap(map([A, B]));
    await writeFile(join(dir, DEVICE_MAP_FILE), map([A]));
    const current = DeviceMapView.prototype.current;
    let reads = 0;
    vi.spyOn(DeviceMapView.prototype, 'current').mockImplementation(function (this: DeviceMapView) {
      return reads++ === 0 ? Promise.resolve(before) : current.call(this);
    });
    const driver = new XenAbdDriver({ root: dir });
    const vm = await driver.getVM(APPLIANCE.uuid);
    expect(vm.disks.map((d) => d.id)).toContain(A);
    // B, unplugged now, is refused when it is opened, not when A is listed.
    const b = vm.disks.find((d) => d.id === B);
    if (b) await expect(driver.openReader(b)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });
});
