import { mkdir, realpath } from 'node:fs/promises';
import type { ImageReader } from '@replikit/formats';
import { guestRead, guestWrite, guestWrites } from './host/guest-io.js';
import { armFaults, type HostFaults, readScriptLog, type ScriptLogEntry } from './host/host-files.js';
import { type HostState, loadState } from './host/host-state.js';
import { openCountedVhdx, type ReadCounts } from './host/read-counter.js';
import { writeFakePwsh } from './launcher.js';

/** A simulated Hyper-V host: a folder, and the fake `pwsh` that drives it. */
export interface SimulatedHyperVHost {
  /** The host folder (real path): `host.json`, the VHDX files a caller puts under it, logs. */
  readonly root: string;
  /** The fake `pwsh` executable, for node-powershell's `executable` option. */
  readonly pwsh: string;
  /** The host's state as the cmdlets left it. */
  state(): Promise<HostState>;
  /** Every line and decoded script the fake `pwsh` processes have received, oldest first. */
  scriptLog(): Promise<ScriptLogEntry[]>;
  /** Arms faults (each fires once), for tests. */
  armFaults(faults: HostFaults): Promise<void>;
  /** A guest write to a VM's drive (drive order), recorded by change tracking. */
  guestWrite(vmName: string, drive: number, offset: number, data: Uint8Array): Promise<void>;
  /** Several guest writes to one drive, in order, at the cost of one (for tests that write a lot). */
  guestWrites(vmName: string, drive: number, writes: readonly { offset: number; data: Uint8Array }[]): Promise<void>;
  /** What a VM's guest reads on a drive (the live chain). */
  guestRead(vmName: string, drive: number, offset: number, length: number): Promise<Uint8Array>;
  /**
   * Opens one of the host's VHDX files (with its parents) for reading, counting every byte read
   * per file: give this to a driver as its disk opener when a test must know what it fetched.
   */
  openDisk(path: string): Promise<ImageReader>;
  /** Bytes read through {@link SimulatedHyperVHost.openDisk} so far, per file path. */
  bytesRead(): ReadonlyMap<string, number>;
}

/** Makes (or reopens) a simulated Hyper-V host in `folder`. */
export async function createSimulatedHost(folder: string): Promise<SimulatedHyperVHost> {
  await mkdir(folder, { recursive: true });
  const root = await realpath(folder);
  const pwsh = await writeFakePwsh(root);
  const counts: ReadCounts = new Map();
  return {
    root,
    pwsh,
    state: () => loadState(root),
    scriptLog: () => readScriptLog(root),
    armFaults: (faults) => armFaults(root, faults),
    guestWrite: (vmName, drive, offset, data) => guestWrite(root, vmName, drive, offset, data),
    guestWrites: (vmName, drive, writes) => guestWrites(root, vmName, drive, writes),
    guestRead: (vmName, drive, offset, length) => guestRead(root, vmName, drive, offset, length),
    openDisk: (path) => openCountedVhdx(root, path, counts),
    bytesRead: () => counts,
  };
}
