import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEVICE_MAP_FILE } from '../src/abd/device-map.js';
import { DeviceMapView } from '../src/abd/device-map-view.js';

const SR = '11111111-2222-3333-4444-555555555555';
const APPLIANCE = { uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', name: 'abd' };
const mapWith = (vdi: string) =>
  `${JSON.stringify({ version: 1, appliance: APPLIANCE, srs: { [SR]: '/srs/a' }, disks: [{ device: '1', vdi, sr: SR, size: 4096, mode: 'RW' }] })}\n`;
const A = '0a0a0a0a-0000-4000-8000-000000000001';
const B = '0b0b0b0b-0000-4000-8000-000000000002';

// An unplug and a plug of another disk in the same few milliseconds give a map of the same size
// whose file may carry the same inode number (ext4 reuses a freed one at the next rename) and the
// same times (they tick every few ms). The agent must still see the new plug state.
describe('the agent view of the device map', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-devmap-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('sees a new plug state even when the file keeps its inode, size and times', async () => {
    const file = join(dir, DEVICE_MAP_FILE);
    const when = 1_800_000_000; // whole seconds: the same nanoseconds after both writes
    await writeFile(file, mapWith(A));
    await utimes(file, when, when);
    const view = new DeviceMapView(dir);
    expect((await view.resolve(A)).vdi).toBe(A);
    await writeFile(file, mapWith(B)); // same inode, same length
    await utimes(file, when, when);
    expect((await view.resolve(B)).vdi).toBe(B);
    await expect(view.resolve(A)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });
});
