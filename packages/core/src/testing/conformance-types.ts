import type { Hypervisor, Replica, VMInfo } from '../contracts/index.js';
import type { EngineOptions } from '../engine/run-engine.js';

/** The source VM the suite asks a fixture to create. */
export interface SourceVMSpec {
  /** A unique name (the suite generates it). */
  name: string;
  /**
   * Disks to create, in order, reading as zero. `id` is a wish: drivers that cannot choose disk ids
   * may ignore it; the suite uses the ids of the returned {@link VMInfo}.
   */
  disks: Array<{ id: string; size: number }>;
}

/** Driver-specific hooks the conformance suite needs: what only the platform itself can do. */
export interface DriverConformanceFixtures {
  /** Creates a stopped source VM with empty disks and returns it as `getVM` would. */
  createSourceVM(hv: Hypervisor, spec: SourceVMSpec): Promise<VMInfo>;
  /** Writes `data` at `offset` of a source VM disk the way the running guest would. */
  writeGuest(hv: Hypervisor, vmId: string, diskId: string, offset: number, data: Uint8Array): Promise<void>;
  /** Writes into a replica disk behind replikit's back (a user editing the replica). */
  writeOutside(hv: Hypervisor, replica: Replica, diskId: string, offset: number, data: Uint8Array): Promise<void>;
  /** Called once after the last test (remove temporary folders, stop simulators). */
  cleanup?(): Promise<void>;
}

/** Options of `runDriverConformance`. */
export interface DriverConformanceOptions {
  /** The driver's name, shown in the test report. */
  name: string;
  /** Creates a connected driver. Called before each test; the suite closes it after the test. */
  create(): Promise<Hypervisor>;
  /** Driver-specific hooks. */
  fixtures: DriverConformanceFixtures;
  /**
   * The transport the engine end-to-end case runs with: `localTransport()` of
   * `@replikit/transport`.
   */
  transport: EngineOptions['transport'];
  /**
   * The source VMs the fixtures create track their changes: the engine's incremental run must then
   * be `tracked` (without it, a `hash-diff` run is accepted where the tracker answers `undefined`).
   * @default false
   */
  trackedVMs?: boolean;
  /**
   * The platform's disk size granule (Hyper-V: 512, whole logical sectors): a disk the suite makes
   * with a partial last block has a size that is a multiple of it.
   * @default 1
   */
  sizeGranule?: number;
  /**
   * Size of the disks the suite creates: a multiple of 1 MiB, at least 4 MiB. Keep it small: every
   * case writes and reads whole disks.
   * @default 4 MiB
   */
  diskSize?: number;
}
