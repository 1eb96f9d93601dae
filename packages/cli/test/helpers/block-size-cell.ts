import { randomBytes } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BlockHasher,
  DriverRegistry,
  type EngineOptions,
  FileStateStore,
  type JobSpecInput,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { compareBytes, readWholeDisk } from '@replikit/core/testing';
import { FileBlockStore, FileCacheProvider } from '@replikit/dedup';
import { createFileDriver, createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { createAgent, createNetworkTransport, localTransport, type Security } from '@replikit/transport';

/**
 * How a cell replicates: a full run (the second one over the existing replica, from a fresh state
 * folder), tracked blocks, a verified diff, a trusted replication cache, a single-pass backup, or
 * the network transport over a real loopback socket.
 */
export type CellMode = 'full' | 'tracked' | 'hash-diff' | 'cache' | 'single-pass' | 'tcp';

/** Every mode, in the matrix's order. */
export const CELL_MODES: readonly CellMode[] = ['full', 'tracked', 'hash-diff', 'cache', 'single-pass', 'tcp'];

/** A guest write: bytes at an offset of the disk. */
export interface GuestWrite {
  offset: number;
  data: Uint8Array;
}

/** What one cell does. */
export interface CellSpec {
  blockSize: number;
  /** Disk size in bytes. */
  size: number;
  mode: CellMode;
  /** Written before the first run. */
  initial: readonly GuestWrite[];
  /** Written between the first and the second run. */
  changes: readonly GuestWrite[];
  /** The hasher every run uses (shared between cells; the cells never close it). */
  hasher: BlockHasher;
  /** Whether the source VM tracks its changes. @default true for tracked, cache and single-pass */
  tracking?: boolean;
  /** For `tcp`: plain TCP with a key, or TLS with a pre-shared key. @default 'tcp' */
  security?: 'tcp' | 'tls';
}

/** What a cell saw: for each run, its mode and whether the replica (and backup version) equal the guest's disk. */
export interface CellResult {
  modes: string[];
  /** `'equal'`, or where the replica differs from what the guest wrote (per run). */
  replica: string[];
  /** For single-pass: `'equal'`, or where the restored backup version differs (per run). */
  backup: string[];
}

/**
 * Where cells make their folders: a RAM-backed folder when the machine has one with room (a cell
 * spends most of its time in fsync otherwise), else the OS temporary folder.
 */
export function scratchBase(): string {
  try {
    const shm = statfsSync('/dev/shm');
    if (shm.bavail * shm.bsize >= 2 * 1024 ** 3) return '/dev/shm';
  } catch {
    // no /dev/shm here
  }
  return tmpdir();
}

/** The model of a disk: applies writes, clipped to the disk. */
export function applyWrites(model: Uint8Array, writes: readonly GuestWrite[]): void {
  for (const write of writes) model.set(write.data.subarray(0, Math.max(0, model.length - write.offset)), write.offset);
}

/** Writes clipped to a disk of `size` bytes (writes that start past its end are left out). */
export function clipWrites(writes: readonly GuestWrite[], size: number): GuestWrite[] {
  return writes
    .filter((write) => write.offset < size && write.data.length > 0)
    .map((write) => ({ offset: write.offset, data: write.data.subarray(0, size - write.offset) }));
}

/**
 * Runs one cell end to end with the engine on the file driver: creates the VM, writes `initial`,
 * replicates, writes `changes`, replicates again, and compares the replica (and the backup
 * version) with a model of the guest's disk after each run. Removes its folder.
 */
export async function runCell(spec: CellSpec): Promise<CellResult> {
  const dir = await mkdtemp(join(scratchBase(), 'replikit-block-size-'));
  const vms = join(dir, 'vms');
  const replicas = join(dir, 'replicas');
  const tracking = spec.tracking ?? tracksByDefault(spec.mode);
  const drivers = new DriverRegistry().register(fileDriver);
  // The engine closes a run's hasher after the run: this one is shared by every cell, so it is lent without `close`.
  const { close: _close, ...lent } = spec.hasher;
  const hasher: BlockHasher = lent;
  const key = randomBytes(32);
  const security: Security =
    spec.security === 'tls' ? { kind: 'tls', psk: { identity: 'cell', key } } : { kind: 'tcp', key };
  const agent =
    spec.mode === 'tcp'
      ? createAgent({ target: createFileDriver({ root: replicas }), security, hasher: () => hasher })
      : undefined;
  const store = spec.mode === 'single-pass' ? new FileBlockStore(join(dir, 'store')) : undefined;
  const result: CellResult = { modes: [], replica: [], backup: [] };
  try {
    const address = await agent?.listen({ host: '127.0.0.1', port: 0 });
    const engineFor = (state: string) => {
      const options: EngineOptions = {
        stateStore: new FileStateStore(join(dir, state)),
        drivers,
        digest: spec.hasher.algorithm,
        hasher: () => hasher,
        transport: localTransport(),
      };
      if (spec.mode === 'cache' || spec.mode === 'single-pass')
        options.cache = new FileCacheProvider(join(dir, state, 'cache'));
      if (store) options.backup = store;
      if (address) {
        const transport = createNetworkTransport({ address, security, hasher: () => hasher });
        options.transport = () => transport;
      }
      return new ReplicationEngine(options);
    };
    const job: JobSpecInput = {
      name: 'cell',
      source: { driver: 'file', root: vms, vm: 'vm' },
      target: { driver: 'file', root: replicas },
      method: 'qhybrid',
      blockSize: spec.blockSize,
      options: {
        ...(spec.mode === 'cache' || spec.mode === 'single-pass' ? { replicationCache: true } : {}),
        ...(spec.mode === 'single-pass' ? { singlePass: true } : {}),
      },
    };
    await createFileVM(vms, { name: 'vm', disks: [{ id: 'd0', size: spec.size }], changeTracking: tracking });
    const model = new Uint8Array(spec.size);
    const source = createFileDriver({ root: vms });
    const target = createFileDriver({ root: replicas });
    const runAndCheck = async (engine: ReplicationEngine, writes: readonly GuestWrite[]) => {
      const clipped = clipWrites(writes, spec.size);
      for (const write of clipped) await writeGuestDisk(vms, 'vm', 'd0', write.offset, write.data);
      applyWrites(model, clipped);
      let record: RunRecord;
      try {
        record = await engine.run(job);
      } finally {
        await engine.close();
      }
      result.modes.push(record.disks[0]?.mode ?? 'none');
      result.replica.push(compareBytes(await readWholeDisk(target, record.replica!.disks[0]!), model));
      if (store) {
        const restored = join(dir, `${record.runId}.raw`);
        await store.restore('vm', record.backup!.version!, record.snapshot!.disks[0]!.id, restored);
        result.backup.push(compareBytes(await readFile(restored), model));
      }
    };
    await runAndCheck(engineFor('state'), spec.initial);
    // A full run over the existing replica: a fresh state folder knows no base snapshot.
    await runAndCheck(engineFor(spec.mode === 'full' ? 'state-again' : 'state'), spec.changes);
    await source.close();
    await target.close();
    return result;
  } finally {
    await agent?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The mode a cell's second run plans: full for `full`, else tracked blocks when the VM tracks them. */
export function expectedSecondMode(mode: CellMode, tracking: boolean): string {
  if (mode === 'full') return 'full';
  return tracking ? 'tracked' : 'hash-diff';
}

/** Whether a cell's VM tracks its changes by default. */
export function tracksByDefault(mode: CellMode): boolean {
  return mode === 'tracked' || mode === 'cache' || mode === 'single-pass';
}
