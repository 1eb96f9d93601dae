import type { OperationOptions } from '@replikit/core';
import { otherConfig, type XRecord } from '../xen-records.js';
import { sig, type XenFailoverContext } from './failover-context.js';
import type { LiveVdi } from './live-vdi.js';

/**
 * `other_config` key of a probe: a short-lived `VDI.snapshot` of a running VM's disk, taken to ask
 * CBT about it or to read it (XAPI refuses both on a VDI attached to a running VM). Its value is
 * `<vm uuid>/<userdevice>`. A probe is destroyed as soon as it is used; one left by a killed
 * process is destroyed by the next probe of that disk. Destroying a snapshot merges its CBT log
 * into the next one on the chain, so a probe leaves the disk's change tracking as it found it.
 */
export const PROBE_KEY = 'replikit:probe-of';

/** The probe tag of a disk. */
const probeTag = (disk: LiveVdi): string => `${disk.vmId}/${disk.userdevice}`;

/**
 * Destroys the probes of `disk` a killed process left, and the tag on the live VDI (set only
 * for the instant of a snapshot). Nothing when there are none.
 */
export async function dropProbes(ctx: XenFailoverContext, disk: LiveVdi, options?: OperationOptions): Promise<void> {
  const s = sig(options);
  const tag = probeTag(disk);
  const vdis = await ctx.connection.call<Record<string, XRecord>>('VDI.get_all_records', [], s);
  for (const [ref, vdi] of Object.entries(vdis)) {
    if (otherConfig(vdi)[PROBE_KEY] !== tag) continue;
    if (ref === disk.vdiRef) {
      await ctx.connection.call('VDI.remove_from_other_config', [ref, PROBE_KEY], s);
    } else if (vdi.is_a_snapshot === true && ((vdi.VBDs as string[] | undefined) ?? []).length === 0) {
      await ctx.connection.callAsync('VDI.destroy', [ref], s);
    }
  }
}

/**
 * Takes a probe of `disk` and returns its ref. The live VDI carries the tag for the instant of
 * `VDI.snapshot` (a snapshot inherits `other_config`), so a probe is tagged from its first moment:
 * a kill at any point leaves nothing {@link dropProbes} would not find.
 */
export async function takeProbe(ctx: XenFailoverContext, disk: LiveVdi, options?: OperationOptions): Promise<string> {
  const s = sig(options);
  await dropProbes(ctx, disk, options);
  await ctx.connection.call('VDI.add_to_other_config', [disk.vdiRef, PROBE_KEY, probeTag(disk)], s);
  let probe: string;
  try {
    probe = await ctx.connection.callAsync<string>('VDI.snapshot', [disk.vdiRef, {}], s);
  } finally {
    await ctx.connection.call('VDI.remove_from_other_config', [disk.vdiRef, PROBE_KEY], s);
  }
  await ctx.faultHook?.('probe:taken');
  return probe;
}

/** Destroys a probe taken by {@link takeProbe}. */
export async function destroyProbe(ctx: XenFailoverContext, probe: string, options?: OperationOptions): Promise<void> {
  await ctx.connection.callAsync('VDI.destroy', [probe], sig(options));
}
