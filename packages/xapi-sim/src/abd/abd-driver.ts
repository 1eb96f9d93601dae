import {
  AbstractHypervisor,
  type Capabilities,
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  defineDriver,
  InputError,
  type Replica,
  type ReplicaSpec,
  type VMInfo,
} from '@replikit/core';
import { z } from 'zod';
import { DeviceMapView, type VisibleDisk, visibleIn } from './device-map-view.js';
import { openDataFile, PluggedDiskReader, PluggedDiskWriter } from './plugged-disk.js';

/** The kind of the appliance-side driver, as `replikit-agent --driver` names it. */
export const XEN_ABD_KIND = 'xen-abd';

const CAPABILITIES: Capabilities = {
  methods: ['abd'],
  canBeSource: true,
  canBeTarget: true,
  changeTracking: false,
  formats: ['raw'],
  restorePoints: false,
};

/** Options of the appliance-side driver. */
export interface XenAbdDriverOptions {
  /** The appliance's folder, holding the device map (`devices.json`) the simulator keeps. */
  readonly root: string;
}

function refOf(vm: string, disk: VisibleDisk): DiskRef {
  return {
    id: disk.vdi,
    vmId: vm,
    size: disk.size,
    label: `device ${disk.device}`,
    meta: { device: disk.device, sr: disk.sr, mode: disk.mode },
  };
}

/**
 * The driver a `replikit-agent` runs inside a delegate appliance: its disks are the VDIs plugged
 * into the appliance now, named by VDI uuid (or `device:<userdevice>`). It moves bytes only; the
 * XenServer driver keeps replicas, holds, marks and restore points in XAPI. See the package
 * README, "The delegate appliance", for the contract.
 */
export class XenAbdDriver extends AbstractHypervisor {
  /** `xen-abd`. */
  readonly kind = XEN_ABD_KIND;
  /** Source and target of the `abd` method, raw disks, no change tracking or restore points. */
  readonly capabilities = CAPABILITIES;
  private readonly view: DeviceMapView;

  constructor(options: XenAbdDriverOptions) {
    super();
    this.view = new DeviceMapView(options.root);
  }

  /** One VM: the appliance, whose disks are the plugged VDIs on SRs it sees. */
  protected async _listVMs(): Promise<VMInfo[]> {
    const map = await this.view.current();
    const disks = map.disks.filter((d) => map.srs[d.sr] !== undefined);
    // From this one read of the map: a disk unplugged meanwhile must not fail the listing.
    const visible = disks.map((d) => visibleIn(map, d.vdi));
    return [
      {
        id: map.appliance.uuid,
        name: map.appliance.name,
        cpus: 1,
        memoryMiB: 0,
        powerState: 'running',
        disks: visible.map((d) => refOf(map.appliance.uuid, d)),
      },
    ];
  }

  /** Reads a plugged VDI (a source appliance reading a snapshot VDI). */
  protected override async _openReader(disk: DiskRef): Promise<DiskReader> {
    const visible = await this.view.resolve(disk.id);
    return new PluggedDiskReader(this.view, visible, await openDataFile(visible, false));
  }

  /**
   * The replica as plugged VDIs: `spec.placement.vdis` names, in the order of `spec.disks`, the
   * VDI (uuid or `device:<n>`) plugged read-write for each disk; each must be at least as large.
   */
  protected override async _ensureReplica(spec: ReplicaSpec): Promise<Replica> {
    const vdis = spec.placement?.vdis;
    if (!Array.isArray(vdis) || vdis.length !== spec.disks.length || vdis.some((v) => typeof v !== 'string')) {
      throw new InputError(
        `the appliance needs placement.vdis: one plugged VDI (uuid or device:<n>) per disk of replica '${spec.name}' (${spec.disks.length})`,
      );
    }
    const map = await this.view.current();
    const disks: DiskRef[] = [];
    for (const [i, id] of (vdis as string[]).entries()) {
      const visible = await this.view.resolve(id, true);
      const want = spec.disks[i]!.size;
      if (visible.size < want) {
        throw new InputError(
          `VDI ${visible.vdi} holds ${visible.size} bytes; disk ${i} of '${spec.name}' needs ${want}`,
        );
      }
      disks.push(refOf(map.appliance.uuid, visible));
    }
    return { id: spec.name, name: spec.name, disks, created: false, meta: { appliance: map.appliance.uuid } };
  }

  /** Writes a plugged VDI (a target appliance writing a replica VDI); refused once it is unplugged. */
  protected override async _openWriter(_replica: Replica, disk: DiskRef): Promise<DiskWriter> {
    const visible = await this.view.resolve(disk.id, true);
    return new PluggedDiskWriter(this.view, visible, await openDataFile(visible, true));
  }
}

/**
 * The appliance-side driver as a definition, for `replikit-agent --driver xen-abd --root DIR`
 * (the simulator's appliance agent registers it).
 */
export const xenAbdDriver = defineDriver<{ root: string; confine: boolean }>({
  kind: XEN_ABD_KIND,
  capabilities: CAPABILITIES,
  options: z.strictObject({ root: z.string().min(1), confine: z.boolean().default(true) }),
  create: (options) => new XenAbdDriver({ root: options.root }),
});
