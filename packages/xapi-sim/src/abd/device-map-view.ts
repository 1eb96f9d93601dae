import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, IoError, NotFoundError, toStorageError } from '@replikit/core';
import { DEVICE_MAP_FILE, type DeviceMap, isUuid, type PluggedDisk, parseDeviceMap } from './device-map.js';

/** A plugged disk the appliance may use, with the path of its data file. */
export interface VisibleDisk extends PluggedDisk {
  /** The VDI's data file: `<SR folder>/<vdi uuid>.raw`, never anything else. */
  readonly path: string;
}

/**
 * The agent's view of its appliance's device map: read again on every I/O, so that a disk
 * unplugged a moment ago is refused and one plugged a moment ago is seen. (It once kept the map
 * while the file's inode, time and size stayed the same; but the simulator renames a new file over
 * it, ext4 hands the freed inode number to the next one, and its times tick every few
 * milliseconds, so an unplug followed at once by a plug of another disk could look unchanged.)
 * Parsing is skipped while the text is the same.
 */
export class DeviceMapView {
  private readonly path: string;
  private cached: { text: string; map: DeviceMap } | undefined;

  /** @param root - the appliance's folder, holding `devices.json`. */
  constructor(root: string) {
    this.path = join(root, DEVICE_MAP_FILE);
  }

  /** The device map as it is now. */
  async current(): Promise<DeviceMap> {
    try {
      const st = await lstat(this.path);
      if (!st.isFile()) throw new IoError(`${this.path} is not a regular file`);
    } catch (error) {
      throw toStorageError(error, `reading the appliance device map ${this.path}`);
    }
    const fh = await open(this.path, constants.O_RDONLY | constants.O_NOFOLLOW).catch((error: unknown) => {
      throw toStorageError(error, `reading the appliance device map ${this.path}`);
    });
    try {
      const text = await fh.readFile('utf8');
      if (this.cached?.text === text) return this.cached.map;
      const map = parseDeviceMap(text);
      this.cached = { text, map };
      return map;
    } finally {
      await fh.close();
    }
  }

  /**
   * The plugged disk named `id` — a VDI uuid, or `device:<userdevice>` — with its data file, or
   * an error: `E_NOT_FOUND` when it is not plugged (any more), `E_INPUT` when it lies on an SR the
   * appliance is not configured to see or is plugged read-only and `write` is asked.
   */
  async resolve(id: string, write = false): Promise<VisibleDisk> {
    return visibleIn(await this.current(), id, write);
  }
}

/**
 * The plugged disk named `id` in `map` (one read of the device map), as
 * {@link DeviceMapView.resolve} answers it. Looking several disks up in one map keeps a disk
 * unplugged meanwhile from failing the others' look-up.
 */
export function visibleIn(map: DeviceMap, id: string, write = false): VisibleDisk {
  const byDevice = /^device:(\d{1,3})$/.exec(id)?.[1];
  const disk = map.disks.find((d) => (byDevice === undefined ? d.vdi === id : d.device === byDevice));
  const who = `appliance '${map.appliance.name}' (${map.appliance.uuid})`;
  if (disk === undefined) {
    throw new NotFoundError(`disk '${id}' is not plugged into ${who}; plug its VBD (VBD.plug) first`, {
      details: { disk: id, appliance: map.appliance.uuid },
    });
  }
  const folder = map.srs[disk.sr];
  if (folder === undefined) {
    throw new InputError(
      `VDI ${disk.vdi} is on SR ${disk.sr}, which ${who} is not configured to see; add the SR to its xenstore_data vm-data/replikit/srs`,
      { details: { vdi: disk.vdi, sr: disk.sr, appliance: map.appliance.uuid } },
    );
  }
  if (write && disk.mode !== 'RW') {
    throw new InputError(`VDI ${disk.vdi} is plugged into ${who} read-only (VBD mode RO); it cannot be written`, {
      details: { vdi: disk.vdi, appliance: map.appliance.uuid },
    });
  }
  // The file name comes from a checked uuid and nothing else: a data file stays in its SR folder.
  if (!isUuid(disk.vdi)) throw new InputError(`VDI uuid '${disk.vdi}' is malformed`);
  return { ...disk, path: join(folder, `${disk.vdi}.raw`) };
}
