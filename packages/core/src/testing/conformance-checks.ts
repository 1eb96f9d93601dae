import type { DiskRef, Extent, Hypervisor, Snapshot } from '../contracts/index.js';
import { isReplikitError } from '../errors.js';
import type { DriverConformanceFixtures } from './conformance-types.js';
import { readWholeDisk } from './test-data.js';

/** What every check needs: a connected driver, its fixtures, and a unique name to give a VM. */
export interface ConformanceCheckContext {
  /** The driver under test (connected). */
  hv: Hypervisor;
  /** The driver's fixtures. */
  fixtures: DriverConformanceFixtures;
  /** A unique VM name for this check. */
  name: string;
  /** Size of the disks to create: at least 4 MiB. */
  size: number;
}

/** Thrown by a check whose property does not hold; the message says what the driver did wrong. */
export class ConformanceCheckError extends Error {
  override name = 'ConformanceCheckError';
}

function fail(message: string): never {
  throw new ConformanceCheckError(message);
}

/** A small deterministic generator (mulberry32), so a failing run can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function collectExtents(source: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of source) out.push({ offset: e.offset, length: e.length });
  return out;
}

/**
 * The change-tracker model check: random guest writes (odd offsets, sizes across block edges,
 * rewrites of the same bytes, writes at the disk's last partial block) between several snapshots,
 * one of them deleted with `keepMetadata`. For every pair of snapshots where the tracker answers,
 * its extents must be ascending, inside the disk, and cover every byte that differs between the two
 * snapshots' contents. A tracker may answer `undefined` (the engine then compares hashes); one that
 * answers too little would silently corrupt replicas. Does nothing without a `changeTracker`.
 *
 * @returns how many snapshot pairs the tracker answered (the others fell back to hash-diff).
 * @throws ConformanceCheckError when an extent is malformed or a changed byte is not covered.
 */
export async function checkChangeTrackerModel(ctx: ConformanceCheckContext, seed = 12): Promise<{ answered: number }> {
  const { hv, fixtures } = ctx;
  if (!hv.changeTracker || !hv.capabilities.canBeSource) return { answered: 0 };
  const size = ctx.size + 5000; // the last block is a partial one
  const vm = await fixtures.createSourceVM(hv, { name: ctx.name, disks: [{ id: 'disk0', size }] });
  const diskId = vm.disks[0]!.id;
  const next = random(seed);
  const write = async (offset: number, length: number): Promise<void> => {
    const data = new Uint8Array(length);
    for (let i = 0; i < length; i++) data[i] = 1 + Math.floor(next() * 255);
    await fixtures.writeGuest(hv, vm.id, diskId, offset, data);
  };
  const round = async (): Promise<void> => {
    for (let i = 0; i < 6; i++) {
      const length = 1 + Math.floor(next() * 3 * 65_536);
      const offset = Math.floor(next() * (size - length)) | 1; // odd
      await write(offset, length);
      if (i === 2) await write(offset, Math.min(length, 100)); // the same bytes again
    }
    await write(size - 3, 3); // the last, partial block
    await write(4095 + Math.floor(next() * 8) * 65_536, 2); // across a 4 KiB and near a 64 KiB edge
  };
  const snaps: Array<{ snap: Snapshot; content: Uint8Array }> = [];
  await round();
  for (let i = 0; i < 4; i++) {
    if (i > 0) await round();
    const snap = await hv.snapshot(vm.id, `model ${i}`);
    snaps.push({ snap, content: await readWholeDisk(hv, snap.disks[0]!) });
  }
  // The engine deletes the previous snapshot keeping its metadata; tracking must keep working.
  await hv.deleteSnapshot(snaps[1]!.snap, { keepMetadata: true });
  await round();
  const last = await hv.snapshot(vm.id, 'model 4');
  snaps.push({ snap: last, content: await readWholeDisk(hv, last.disks[0]!) });
  let answered = 0;
  for (let i = 0; i < snaps.length; i++) {
    for (let j = i + 1; j < snaps.length; j++) {
      if (j === 1) continue; // its data is gone: it can only be a base now
      const a = snaps[i]!;
      const b = snaps[j]!;
      const disk: DiskRef = b.snap.disks[0]!;
      const answer = await hv.changeTracker.changes(disk, a.snap, b.snap);
      if (answer === undefined) continue;
      answered++;
      const extents = await collectExtents(answer);
      assertCovers(extents, a.content, b.content, `changes(${a.snap.label} → ${b.snap.label})`);
    }
  }
  for (const { snap } of snaps) {
    if (snap !== snaps[1]!.snap) await hv.deleteSnapshot(snap);
  }
  return { answered };
}

/** Throws unless `extents` are ascending, inside the disk, and cover every byte where `a` and `b` differ. */
export function assertCovers(extents: Extent[], a: Uint8Array, b: Uint8Array, what: string): void {
  let end = 0;
  for (const e of extents) {
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.length <= 0) {
      fail(`${what}: malformed extent ${JSON.stringify(e)}`);
    }
    if (e.offset < end) fail(`${what}: extents not ascending or overlapping at ${e.offset}`);
    end = e.offset + e.length;
    if (end > b.length) fail(`${what}: extent ${e.offset}+${e.length} ends past the disk (${b.length} bytes)`);
  }
  for (let i = 0, k = 0; i < b.length; i++) {
    if (a[i] === b[i]) continue;
    while (k < extents.length && extents[k]!.offset + extents[k]!.length <= i) k++;
    if (k >= extents.length || i < extents[k]!.offset) {
      fail(
        `${what}: byte ${i} changed but no tracked extent covers it (a tracker that misses changes corrupts replicas)`,
      );
    }
  }
}

async function expectAborted(what: string, action: () => Promise<unknown>): Promise<void> {
  try {
    await action();
  } catch (error) {
    if (isReplikitError(error, 'E_ABORTED')) return;
    fail(`${what} with an aborted signal threw ${(error as { code?: string })?.code ?? String(error)}, not E_ABORTED`);
  }
  fail(`${what} ignored its aborted signal and went ahead`);
}

/**
 * Every long method rejects with `E_ABORTED` when its `AbortSignal` is already aborted, and does
 * nothing: `listVMs`, `snapshot`, `deleteSnapshot`, `ensureReplica`, `createRestorePoint`,
 * `revertTo`, `deleteReplica` (the methods a side does not have are left out).
 *
 * @throws ConformanceCheckError naming the first method that went ahead or threw another code.
 */
export async function checkAbortHonoured(ctx: ConformanceCheckContext): Promise<void> {
  const { hv, fixtures } = ctx;
  const controller = new AbortController();
  controller.abort();
  const signal = controller.signal;
  if (hv.capabilities.canBeSource) {
    const vm = await fixtures.createSourceVM(hv, { name: `${ctx.name}-src`, disks: [{ id: 'disk0', size: ctx.size }] });
    await expectAborted('listVMs', () => hv.listVMs({ signal }));
    await expectAborted('snapshot', () => hv.snapshot(vm.id, 'aborted', { signal }));
    if ((await hv.listSnapshots(vm.id)).some((s) => s.label === 'aborted')) fail('an aborted snapshot() was taken');
    const snap = await hv.snapshot(vm.id, 'kept');
    await expectAborted('deleteSnapshot', () => hv.deleteSnapshot(snap, { signal }));
    await expectAborted('deleteSnapshot({ keepMetadata })', () =>
      hv.deleteSnapshot(snap, { signal, keepMetadata: true }),
    );
    if (!(await hv.listSnapshots(vm.id)).some((s) => s.id === snap.id)) fail('an aborted deleteSnapshot() deleted');
    await hv.deleteSnapshot(snap);
  }
  if (hv.capabilities.canBeTarget) {
    const spec = replicaSpecOf(ctx);
    await expectAborted('ensureReplica', () => hv.ensureReplica(spec, { signal }));
    const replica = await hv.ensureReplica(spec);
    if (!replica.created) fail('an aborted ensureReplica() created the replica');
    if (hv.capabilities.restorePoints) {
      await expectAborted('createRestorePoint', () => hv.createRestorePoint(replica, 'aborted', { signal }));
      const point = await hv.createRestorePoint(replica, 'one');
      await expectAborted('revertTo', () => hv.revertTo(replica, point, { signal }));
      if ((await hv.listRestorePoints(replica)).some((p) => p.label === 'aborted'))
        fail('an aborted createRestorePoint() made a point');
    }
    await expectAborted('deleteReplica', () => hv.deleteReplica(replica, { signal }));
    await hv.getVM(replica.id); // still there
    await hv.deleteReplica(replica);
  }
}

/** The spec of the one-disk replica `<name>-rep` the checks make (of a source VM that need not exist). */
function replicaSpecOf(ctx: ConformanceCheckContext) {
  const source = {
    id: `${ctx.name}-src`,
    name: `${ctx.name}-src`,
    cpus: 1,
    memoryMiB: 256,
    powerState: 'stopped' as const,
    disks: [{ id: 'disk0', vmId: `${ctx.name}-src`, size: ctx.size }],
  };
  return { name: `${ctx.name}-rep`, source, disks: [{ sourceDiskId: 'disk0', size: ctx.size }] };
}

/**
 * `close()` closes the readers and writers the driver handed out: after it, each of them refuses
 * to work (a writer left open would keep the disk locked and its data unflushed).
 *
 * @throws ConformanceCheckError when a reader or writer still works after `close()`.
 */
export async function checkCloseReleases(ctx: ConformanceCheckContext): Promise<void> {
  const { hv, fixtures } = ctx;
  const probes: Array<{ what: string; use: () => Promise<unknown> }> = [];
  if (hv.capabilities.canBeTarget) {
    const replica = await hv.ensureReplica(replicaSpecOf(ctx));
    const writer = await hv.openWriter(replica, replica.disks[0]!);
    await writer.write(0, new Uint8Array(10).fill(1));
    probes.push({ what: 'writer.write', use: () => writer.write(10, new Uint8Array(10).fill(2)) });
  }
  if (hv.capabilities.canBeSource) {
    const vm = await fixtures.createSourceVM(hv, { name: `${ctx.name}-vm`, disks: [{ id: 'disk0', size: ctx.size }] });
    const snap = await hv.snapshot(vm.id, 'close');
    const reader = await hv.openReader(snap.disks[0]!);
    await reader.read(0, 10);
    probes.push({ what: 'reader.read', use: () => reader.read(0, 10) });
  }
  await hv.close();
  for (const probe of probes) {
    let worked = true;
    try {
      await probe.use();
    } catch {
      worked = false;
    }
    if (worked) fail(`${probe.what} still works after the driver's close(): close() must close what it handed out`);
  }
  await hv.close(); // twice is harmless
}
