import { type DiskReader, InputError } from '@replikit/core';
import type { AbdLease, PluggedVdi } from './abd-manager.js';

/**
 * Reads a source VDI (a snapshot's) plugged into the source appliance, through its agent: the
 * `abd` method's push path. The bytes come from the appliance over TLS-PSK (the transport's
 * `source` feature); XAPI carries none. The agent checks the VDI is still plugged on every read.
 *
 * @param options - `blockSize`: the reader's natural granularity (what `DiskReader.blockSize`
 *   reports, default 2 MiB); `signal` cancels the look-up.
 * @throws `E_NOT_FOUND` when the appliance's agent does not list the VDI (not plugged, or on an SR
 * it does not see).
 */
export async function openAbdDiskReader(
  lease: AbdLease,
  plugged: PluggedVdi,
  options: { blockSize?: number; signal?: AbortSignal } = {},
): Promise<DiskReader> {
  const target = lease.target();
  const vm = await target.getVM(lease.appliance.uuid, { signal: options.signal });
  const disk = vm.disks.find((d) => d.id === plugged.uuid);
  if (disk === undefined) {
    throw new InputError(
      `VDI ${plugged.uuid} is not among the disks appliance '${lease.appliance.name}' sees: plug it (RO) and check abd.srs names its SR`,
    );
  }
  return target.openSourceReader(lease.appliance.uuid, disk, options.blockSize ?? 2 * 1024 * 1024);
}
