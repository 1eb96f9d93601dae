import { type ConformanceCheckContext, ConformanceCheckError } from './conformance-checks.js';
import { compareBytes, readWholeDisk, testPattern } from './test-data.js';

function fail(message: string): never {
  throw new ConformanceCheckError(message);
}

/** A one-disk replica spec `<name>-rep` of a source VM that need not exist. */
function replicaSpec(ctx: ConformanceCheckContext, tag: string) {
  const id = `${ctx.name}-${tag}-src`;
  const source = { id, name: id, cpus: 1, memoryMiB: 256, powerState: 'stopped' as const, disks: [] };
  return { name: `${ctx.name}-${tag}-rep`, source, disks: [{ sourceDiskId: 'disk0', size: ctx.size }] };
}

/**
 * Concurrent writes to disjoint ranges: many `write`s and `writeZeroes` in flight at once on one
 * writer (as the network agent issues them), at odd offsets and sizes, then one `flush`; the disk
 * must read back exactly as if they had run one after the other. Does nothing unless the driver
 * can be a target.
 *
 * @throws ConformanceCheckError when a byte differs.
 */
export async function checkConcurrentWrites(ctx: ConformanceCheckContext): Promise<void> {
  const { hv } = ctx;
  if (!hv.capabilities.canBeTarget) return;
  const replica = await hv.ensureReplica(replicaSpec(ctx, 'concurrent'));
  const disk = replica.disks[0]!;
  const model = new Uint8Array(disk.size);
  const writer = await hv.openWriter(replica, disk);
  try {
    // A first pass so that the zero writes below have something to clear.
    const base = testPattern(60, disk.size);
    await writer.write(0, base);
    model.set(base);
    const stride = Math.floor(disk.size / 64);
    const pending: Array<Promise<void>> = [];
    for (let i = 0; i < 64; i++) {
      const offset = i * stride + (i % 7) + 1; // odd, never 4 KiB-aligned
      const length = stride - 8 - (i % 5) * 1000;
      if (i % 4 === 3) {
        pending.push(writer.writeZeroes(offset, length));
        model.fill(0, offset, offset + length);
      } else {
        const data = testPattern(100 + i, length);
        pending.push(writer.write(offset, data));
        model.set(data, offset);
      }
    }
    await Promise.all(pending);
    await writer.flush();
  } finally {
    await writer.close();
  }
  if (hv.capabilities.restorePoints) await hv.createRestorePoint(replica, 'concurrent');
  const verdict = compareBytes(await readWholeDisk(hv, disk), model);
  if (verdict !== 'equal') fail(`after concurrent writes to disjoint ranges, the replica disk differs: ${verdict}`);
  await hv.deleteReplica(replica);
}

/**
 * The driver's capabilities agree with what it does: a `changeTracker` exactly when it declares
 * `changeTracking` (whether the tracker answers for a VM is the VM's business: tracking may be off
 * for it); a driver that cannot be a target refuses `ensureReplica`; one with `restorePoints` lists
 * the point it made. (That a declared tracker drives tracked runs is checked end to end by
 * {@link checkEngineEndToEnd} with `requireTracked`.)
 *
 * @throws ConformanceCheckError naming the capability that disagrees.
 */
export async function checkCapabilitiesAgree(ctx: ConformanceCheckContext): Promise<void> {
  const { hv } = ctx;
  const caps = hv.capabilities;
  if (caps.changeTracking !== (hv.changeTracker !== undefined)) {
    fail(
      `capabilities.changeTracking is ${caps.changeTracking} but the driver ${hv.changeTracker ? 'has' : 'has no'} changeTracker`,
    );
  }
  if (!caps.canBeTarget) {
    let refused = false;
    await hv.ensureReplica(replicaSpec(ctx, 'caps')).catch(() => {
      refused = true;
    });
    if (!refused) fail('capabilities.canBeTarget is false but ensureReplica() made a replica');
    return;
  }
  if (caps.restorePoints) {
    const replica = await hv.ensureReplica(replicaSpec(ctx, 'caps'));
    const point = await hv.createRestorePoint(replica, 'caps');
    if (!(await hv.listRestorePoints(replica)).some((p) => p.id === point.id)) {
      fail('capabilities.restorePoints is true but listRestorePoints() does not list the point just made');
    }
    await hv.deleteReplica(replica);
  }
}
