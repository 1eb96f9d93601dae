import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { hostPath } from '../host/host-state.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed } from '../objects/ps-object.js';
import type { CmdletContext, CmdletHandler } from './context.js';

/**
 * The simulated host's default folders, under its root as Windows Server places them on `C:`
 * (`C:\ProgramData\Microsoft\Windows\Virtual Hard Disks` and `…\Hyper-V`).
 */
export function defaultHostFolders(root: string): { virtualHardDiskPath: string; virtualMachinePath: string } {
  const base = join(root, 'ProgramData', 'Microsoft', 'Windows');
  return { virtualHardDiskPath: join(base, 'Virtual Hard Disks'), virtualMachinePath: join(base, 'Hyper-V') };
}

function hostView(c: CmdletContext) {
  const defaults = defaultHostFolders(c.root);
  return typed(TYPE_NAMES.host, {
    ComputerName: 'SIMULATED-HOST',
    VirtualHardDiskPath: c.state.vmHost?.virtualHardDiskPath ?? defaults.virtualHardDiskPath,
    VirtualMachinePath: c.state.vmHost?.virtualMachinePath ?? defaults.virtualMachinePath,
  });
}

const getVmHost: CmdletHandler = async (c) => hostView(c);

/** `Set-VMHost`: only the two default folders are modelled; each must be inside the host folder. */
const setVmHost: CmdletHandler = async (c) => {
  const settings = { ...c.state.vmHost };
  for (const [parameter, field] of [
    ['VirtualHardDiskPath', 'virtualHardDiskPath'],
    ['VirtualMachinePath', 'virtualMachinePath'],
  ] as const) {
    if (!c.has(parameter)) continue;
    const path = await hostPath(c.root, c.arg(parameter), 'Set-VMHost');
    await mkdir(path, { recursive: true });
    settings[field] = path;
  }
  c.state.vmHost = settings;
  c.markDirty();
  return c.has('Passthru') ? hostView(c) : null;
};

/** The host cmdlets: `Get-VMHost`, `Set-VMHost`. */
export const HOST_CMDLETS: Record<string, CmdletHandler> = {
  'Get-VMHost': getVmHost,
  'Set-VMHost': setVmHost,
};
