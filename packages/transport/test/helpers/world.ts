import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DiskRef,
  DriverRegistry,
  FileStateStore,
  type Hypervisor,
  isReplikitError,
  type JobSpecInput,
  ReplicationEngine,
  type RunRecord,
  type Transport,
} from '@replikit/core';
import { createFileDriver, createFileVM, fileDriver } from '@replikit/driver-file';
import { expect } from 'vitest';
import { type Agent, type AgentEvent, createAgent } from '../../src/agent.js';
import type { Address, Security } from '../../src/security.js';

/** A 32-byte pre-shared key. */
export const PSK = randomBytes(32);
/** TLS-PSK security with {@link PSK}. */
export const TLS_PSK: Security = { kind: 'tls', psk: { identity: 'tests', key: PSK } };

/** Folders for source VMs, replicas and state, removed by `dispose`. */
export interface World {
  dir: string;
  vms: string;
  replicas: string;
  registry: DriverRegistry;
  dispose(): Promise<void>;
}

export async function createWorld(): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'replikit-transport-'));
  const vms = join(dir, 'vms');
  const replicas = join(dir, 'replicas');
  await mkdir(vms);
  await mkdir(replicas);
  const registry = new DriverRegistry().register(fileDriver);
  return { dir, vms, replicas, registry, dispose: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * A VM whose disk mixes random blocks, text-like blocks and holes (`blockSize` granularity), so
 * that codecs and zero runs are exercised.
 */
export async function createMixedVm(world: World, name: string, size: number, blockSize = 65536): Promise<void> {
  await createFileVM(world.vms, { name, disks: [{ id: 'd0', size }] });
  const handle = await open(join(world.vms, name, 'd0.raw'), 'r+');
  try {
    const block = Buffer.alloc(blockSize);
    for (let offset = 0, i = 0; offset < size; offset += blockSize, i++) {
      const pick = i % 5;
      if (pick === 0) continue;
      if (pick < 3) randomFillSync(block);
      else block.fill(`line ${i} of a log file with status=200\n`);
      await handle.write(block, 0, Math.min(blockSize, size - offset), offset);
    }
  } finally {
    await handle.close();
  }
}

/** Overwrites random bytes in `count` blocks of a VM disk (a guest changing data). */
export async function scribble(world: World, name: string, size: number, count: number): Promise<void> {
  const { writeGuestDisk } = await import('@replikit/driver-file');
  for (let i = 0; i < count; i++) {
    const offset = Math.floor(Math.random() * (size / 4096)) * 4096;
    await writeGuestDisk(world.vms, name, 'd0', offset, randomBytes(4096));
  }
}

export function jobFor(world: World, vm: string, extra: Partial<JobSpecInput> = {}): JobSpecInput {
  return {
    name: `job-${vm}`,
    source: { driver: 'file', root: world.vms, vm },
    target: { driver: 'file', root: world.replicas, replicaName: `${vm}-replica` },
    method: 'qhybrid',
    ...extra,
  };
}

export function engineFor(world: World, transport: () => Transport, stateDir = 'state'): ReplicationEngine {
  return new ReplicationEngine({
    stateStore: new FileStateStore(join(world.dir, stateDir)),
    drivers: world.registry,
    transport,
    checkpointEveryMs: 0,
  });
}

export async function digestOf(hypervisor: Hypervisor, disk: DiskRef): Promise<string> {
  const reader = await hypervisor.openReader(disk);
  try {
    const hash = createHash('sha256');
    for (let offset = 0; offset < reader.size; offset += 1 << 20) {
      hash.update(await reader.read(offset, Math.min(1 << 20, reader.size - offset)));
    }
    return hash.digest('hex');
  } finally {
    await reader.close();
  }
}

/** True when every replica disk of a completed run equals its snapshot disk. */
export async function replicaMatches(world: World, record: RunRecord): Promise<boolean> {
  const source = createFileDriver({ root: world.vms });
  const target = createFileDriver({ root: world.replicas });
  try {
    for (const [i, disk] of record.snapshot!.disks.entries()) {
      const [a, b] = await Promise.all([digestOf(source, disk), digestOf(target, record.replica!.disks[i]!)]);
      if (a !== b) return false;
    }
    return true;
  } finally {
    await source.close();
    await target.close();
  }
}

/**
 * Runs a job across a link that damages it: true when the run completed and its replica equals
 * the source, false when it failed with `E_TRANSPORT` (a clear failure). Any other outcome (another
 * error, a wrong replica) fails the test.
 */
export async function completedIntact(world: World, run: () => Promise<RunRecord>): Promise<boolean> {
  let record: RunRecord;
  try {
    record = await run();
  } catch (error) {
    expect(isReplikitError(error, 'E_TRANSPORT'), String(error)).toBe(true);
    return false;
  }
  expect(await replicaMatches(world, record)).toBe(true);
  return true;
}

/** An agent on 127.0.0.1 writing into the world's replicas, with its events recorded. */
export async function startAgent(
  world: World,
  security: Security,
): Promise<{ agent: Agent; address: Address; events: AgentEvent[]; lines: string[] }> {
  const events: AgentEvent[] = [];
  const lines: string[] = [];
  const agent = createAgent({
    target: createFileDriver({ root: world.replicas }),
    security,
    onEvent: (event) => events.push(event),
    log: (line) => lines.push(line),
  });
  const address = await agent.listen({ host: '127.0.0.1', port: 0 });
  return { agent, address, events, lines };
}

/** Resolves when `predicate` holds for a new item of `list` (checks on every push). */
export function waitFor<T>(list: T[], predicate: (item: T) => boolean): Promise<T> {
  const found = list.find(predicate);
  if (found) return Promise.resolve(found);
  return new Promise((resolve) => {
    const push = list.push.bind(list);
    list.push = (...items: T[]) => {
      const n = push(...items);
      const hit = items.find(predicate);
      if (hit) resolve(hit);
      return n;
    };
  });
}
