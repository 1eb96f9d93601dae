import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSimulatedHost, type SimulatedHyperVHost } from '@replikit/hyperv-sim';
import {
  createHyperVDriver,
  HyperVDriver,
  hypervDriverOptionsSchema,
  PowerShellLink,
  type PsScript,
} from '../../src/index.js';

// Fixture scripts: what a Hyper-V administrator would run to make the VMs the tests replicate.
const NEW_VHD: PsScript = {
  name: 'test-new-vhd',
  body: 'New-VHD -Path $p.path -SizeBytes $p.size -Dynamic -BlockSizeBytes $p.block',
};
const NEW_VM: PsScript = {
  name: 'test-new-vm',
  body: 'New-VM -Name $p.name -Generation $p.generation -MemoryStartupBytes $p.memory -Version $p.version -NoVHD',
};
const ADD_DRIVE: PsScript = { name: 'test-add-drive', body: 'Add-VMHardDiskDrive -VMName $p.name -Path $p.path' };
const SET_CPUS: PsScript = { name: 'test-set-cpus', body: 'Set-VM -Name $p.name -ProcessorCount $p.cpus' };
const ADD_NIC: PsScript = {
  name: 'test-add-nic',
  body: 'Add-VMNetworkAdapter -VMName $p.name -Name $p.nic -SwitchName $p.switch',
};

/** The scripts the fixtures send (not the driver's). */
export const FIXTURE_SCRIPTS: readonly PsScript[] = [NEW_VHD, NEW_VM, ADD_DRIVE, SET_CPUS, ADD_NIC];

/** A simulated host, a link to make fixtures with, and drivers on it. */
export interface SimHost {
  readonly host: SimulatedHyperVHost;
  /** The fixtures' PowerShell link; {@link SimHost.sharedDriver} drives the host through it too. */
  readonly link: PowerShellLink;
  /**
   * Makes a stopped VM with empty dynamic VHDX disks of `sizes` bytes (files `<diskName>-<n>.vhdx`);
   * resolves with the disk paths.
   */
  makeVM(
    name: string,
    sizes: number[],
    options?: { version?: string; generation?: 1 | 2; cpus?: number; block?: number; diskName?: string },
  ): Promise<string[]>;
  /** Adds a network adapter `nic` on switch `switchName` to VM `name` (a MAC of the host's pool). */
  addNic(name: string, nic: string, switchName: string): Promise<void>;
  /** Adds one more empty disk to VM `name`. */
  addDisk(name: string, size: number): Promise<string>;
  /**
   * A driver on the fixtures' link (no new fake `pwsh`: each costs seconds on a loaded machine),
   * able to be a target with replicas in `<host>/replicas`.
   */
  sharedDriver(options?: { rct?: boolean; counted?: boolean }): HyperVDriver;
  /** A driver on the host (reads counted by the host when `counted`). */
  driver(options?: { rct?: boolean; counted?: boolean }): Promise<HyperVDriver>;
  close(): Promise<void>;
}

let serial = 0;

/** Starts a simulated Hyper-V host in a temporary folder. */
export async function startSimHost(): Promise<SimHost> {
  const dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-'));
  const host = await createSimulatedHost(dir);
  const link = new PowerShellLink({ executable: host.pwsh, timeoutMs: 60_000 });
  const drivers: HyperVDriver[] = [];
  const newDisk = async (size: number, block: number, name = 'disk') => {
    const path = join(host.root, 'disks', `${name}-${++serial}.vhdx`);
    await link.call(NEW_VHD, { path, size, block });
    return path;
  };
  return {
    host,
    link,
    sharedDriver(options = {}) {
      const hv = new HyperVDriver({
        link,
        sharedLink: true,
        rct: options.rct ?? true,
        target: { replicaPath: join(host.root, 'replicas'), onWarning: () => undefined },
        ...(options.counted ? { openImage: (path: string) => host.openDisk(path) } : {}),
      });
      drivers.push(hv);
      return hv;
    },
    async makeVM(name, sizes, options = {}) {
      await link.call(NEW_VM, {
        name,
        generation: options.generation ?? 2,
        memory: 2 ** 30,
        version: options.version ?? '10.0',
      });
      if (options.cpus) await link.call(SET_CPUS, { name, cpus: options.cpus });
      const paths: string[] = [];
      for (const size of sizes) {
        const path = await newDisk(size, options.block ?? 2 ** 20, options.diskName);
        await link.call(ADD_DRIVE, { name, path });
        paths.push(path);
      }
      return paths;
    },
    async addNic(name, nic, switchName) {
      await link.call(ADD_NIC, { name, nic, switch: switchName });
    },
    async addDisk(name, size) {
      const path = await newDisk(size, 2 ** 20);
      await link.call(ADD_DRIVE, { name, path });
      return path;
    },
    async driver(options = {}) {
      const hv = await createHyperVDriver(
        hypervDriverOptionsSchema.parse({
          pwsh: host.pwsh,
          rct: options.rct ?? true,
          callTimeoutMs: 60_000,
          replicaPath: join(host.root, 'replicas'),
        }),
        options.counted ? { openImage: (path) => host.openDisk(path) } : {},
      );
      drivers.push(hv);
      return hv;
    },
    async close() {
      for (const hv of drivers) await hv.close().catch(() => undefined);
      await link.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
