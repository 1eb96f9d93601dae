import { join } from 'node:path';
import { adminCmdlet } from './admin.js';
import type { SimulatedHyperVHost } from './hyperv-host.js';

/** What {@link populateDemoHost} made. */
export interface DemoHost {
  /** The demo VM's name. */
  vm: string;
  /** Its disks, in drive order: the VHDX path and the virtual size. */
  disks: { path: string; size: number }[];
}

const MiB = 2 ** 20;

/** A reproducible byte pattern (xorshift), so the demo's disks hold data that does not compress. */
function pattern(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2_654_435_761 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    new DataView(out.buffer).setUint32(i, x >>> 0, true);
  }
  return out;
}

/**
 * Sets a simulated host up for a demo, as an administrator would: VM `web-01` (generation 2, 2
 * CPUs, 2 GiB, one adapter on switch `LAN`) with two dynamic VHDX disks in
 * `<root>/vms/web-01/`, `system` (`systemMiB`, 16 by default) and `data` (`dataMiB`, 8), holding
 * a few MiB of guest data written through the guest API (so change tracking saw it).
 */
export async function populateDemoHost(
  host: SimulatedHyperVHost,
  options: { systemMiB?: number; dataMiB?: number } = {},
): Promise<DemoHost> {
  const vm = 'web-01';
  const folder = join(host.root, 'vms', vm);
  await adminCmdlet(host.root, 'New-VM', {
    Name: vm,
    Generation: 2,
    MemoryStartupBytes: 2 * 1024 * MiB,
    Path: folder,
    NoVHD: true,
  });
  await adminCmdlet(host.root, 'Set-VM', { Name: vm, ProcessorCount: 2 });
  await adminCmdlet(host.root, 'Add-VMNetworkAdapter', { VMName: vm, Name: 'lan', SwitchName: 'LAN' });
  const disks = [
    { path: join(folder, 'system.vhdx'), size: (options.systemMiB ?? 16) * MiB },
    { path: join(folder, 'data.vhdx'), size: (options.dataMiB ?? 8) * MiB },
  ];
  for (const disk of disks) {
    await adminCmdlet(host.root, 'New-VHD', { Path: disk.path, SizeBytes: disk.size, Dynamic: true });
    await adminCmdlet(host.root, 'Add-VMHardDiskDrive', { VMName: vm, Path: disk.path });
  }
  // A boot area, a file system's worth of data, and some on the data disk; the rest stays empty.
  await host.guestWrite(vm, 0, 0, pattern(1, MiB));
  await host.guestWrite(vm, 0, Math.floor(disks[0]!.size / 3), pattern(2, 4 * MiB));
  await host.guestWrite(vm, 1, MiB, pattern(3, 2 * MiB));
  return { vm, disks };
}
