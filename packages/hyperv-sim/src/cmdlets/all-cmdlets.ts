import { CIM_CMDLETS } from './cim-cmdlets.js';
import type { CmdletHandler } from './context.js';
import { FIRMWARE_CMDLETS } from './firmware-cmdlets.js';
import { HOST_CMDLETS } from './host-cmdlets.js';
import { SNAPSHOT_CMDLETS } from './snapshot-cmdlets.js';
import { VHD_CMDLETS } from './vhd-cmdlets.js';
import { VM_CMDLETS } from './vm-cmdlets.js';

/** Every cmdlet the simulator performs, by its documented name. */
export const CMDLETS: Record<string, CmdletHandler> = {
  ...VM_CMDLETS,
  ...FIRMWARE_CMDLETS,
  ...VHD_CMDLETS,
  ...SNAPSHOT_CMDLETS,
  ...CIM_CMDLETS,
  ...HOST_CMDLETS,
};
