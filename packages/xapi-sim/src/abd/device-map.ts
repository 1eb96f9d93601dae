import { isAbsolute } from 'node:path';
import { FormatError } from '@replikit/core';

/** The name of the device map file in an appliance's folder. */
export const DEVICE_MAP_FILE = 'devices.json';

/** One disk plugged into an appliance: a VBD that is `currently_attached`. */
export interface PluggedDisk {
  /** The VBD's `userdevice` (`'1'`, `'2'`, …): the appliance's `xvdb`, `xvdc`, …. */
  readonly device: string;
  /** The VDI's uuid. */
  readonly vdi: string;
  /** The uuid of the SR holding the VDI. */
  readonly sr: string;
  /** The VDI's `virtual_size` in bytes. */
  readonly size: number;
  /** The VBD's mode: `RW` or `RO`. */
  readonly mode: 'RW' | 'RO';
}

/**
 * What an appliance sees, as the simulator tells its agent: the SR folders it is configured to
 * see and the disks plugged into it now. The simulator rewrites the file atomically (a new file
 * renamed over the old one) before `VBD.plug`/`VBD.unplug` returns, so an agent that reads it
 * before each I/O never uses a disk that is unplugged.
 */
export interface DeviceMap {
  /** Format version: 1. */
  readonly version: 1;
  /** The appliance VM's uuid and name. */
  readonly appliance: { readonly uuid: string; readonly name: string };
  /** The SRs the appliance sees: SR uuid → absolute folder of the SR. */
  readonly srs: Readonly<Record<string, string>>;
  /** The disks plugged into the appliance now, in device order. */
  readonly disks: readonly PluggedDisk[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const DEVICE = /^\d{1,3}$/;

/** True for a lower-case uuid, the only shape a VDI or SR name may take in a data file path. */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

function bad(what: string): never {
  throw new FormatError(`the appliance device map is malformed: ${what}; the simulator rewrites it at each plug`);
}

function diskOf(value: unknown, i: number): PluggedDisk {
  const d = value as Partial<PluggedDisk> | null;
  if (typeof d !== 'object' || d === null) bad(`disks[${i}] is not an object`);
  if (typeof d.device !== 'string' || !DEVICE.test(d.device)) bad(`disks[${i}].device`);
  if (!isUuid(d.vdi)) bad(`disks[${i}].vdi`);
  if (!isUuid(d.sr)) bad(`disks[${i}].sr`);
  if (!Number.isSafeInteger(d.size) || (d.size as number) < 0) bad(`disks[${i}].size`);
  if (d.mode !== 'RW' && d.mode !== 'RO') bad(`disks[${i}].mode`);
  return { device: d.device, vdi: d.vdi, sr: d.sr, size: d.size as number, mode: d.mode };
}

/**
 * Parses and checks a device map (JSON text): uuids where uuids belong, absolute SR folders,
 * sizes as safe integers. Anything else is `E_FORMAT`.
 */
export function parseDeviceMap(text: string): DeviceMap {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    bad('not JSON');
  }
  const m = raw as Partial<DeviceMap> | null;
  if (typeof m !== 'object' || m === null || m.version !== 1) bad('version is not 1');
  const appliance = m.appliance as Partial<DeviceMap['appliance']> | undefined;
  if (!isUuid(appliance?.uuid) || typeof appliance.name !== 'string') bad('appliance');
  const srs: Record<string, string> = {};
  if (typeof m.srs !== 'object' || m.srs === null) bad('srs');
  for (const [uuid, path] of Object.entries(m.srs)) {
    if (!isUuid(uuid) || typeof path !== 'string' || !isAbsolute(path)) bad(`srs.${uuid}`);
    srs[uuid] = path;
  }
  if (!Array.isArray(m.disks)) bad('disks');
  const disks = m.disks.map(diskOf);
  return { version: 1, appliance: { uuid: appliance.uuid, name: appliance.name }, srs, disks };
}
