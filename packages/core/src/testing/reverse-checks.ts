import { expect, it } from 'vitest';
import type { Hypervisor } from '../contracts/index.js';
import type { FailoverCaseEnv } from './failover-checks.js';
import { testPattern } from './test-data.js';

/** Why the reverse cases skip a driver, or `undefined` when they apply. */
function skipReason(hv: Hypervisor): string | undefined {
  if (hv.capabilities.failover !== true || !hv.capabilities.canBeTarget) return 'the driver cannot fail over';
  const missing = (['promotedChanges', 'openLiveDisk'] as const).filter((hook) => typeof hv[hook] !== 'function');
  if (missing.length > 0) {
    return `the driver has no ${missing.join(' / ')}: 'replikit failover reverse' and 'failback' refuse it with E_UNSUPPORTED`;
  }
  return undefined;
}

/**
 * Registers the reverse-replication cases of the conformance suite (vitest `it` blocks), for a
 * driver that has the optional hooks `promotedChanges` and `openLiveDisk`: a promoted replica
 * names (at least) the blocks its guest wrote since the promotion and reads them live, and its
 * live disk is never opened for writing. Skipped, with the reason, for drivers without the hooks.
 */
export function defineReverseCases(env: FailoverCaseEnv): void {
  it('reverse: a promoted replica names the blocks written since its promotion and reads them live', async (ctx) => {
    const hv = env.hv();
    const why = skipReason(hv);
    if (why) ctx.skip(why);
    const { replica } = await env.seedReplica('reverse');
    const disk = replica.disks[0]!;
    const writer = await hv.openWriter(replica, disk, { runId: 'reverse-run' });
    try {
      await writer.write(0, testPattern(60, 4096));
    } finally {
      await writer.close();
    }
    const point = await hv.createRestorePoint(replica, 'reverse-point');
    await expect(hv.promotedChanges!(replica, disk.id)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await hv.promoteReplica!(replica, point);
    const data = testPattern(61, 70_000);
    await env.fixtures.writeOutside(hv, replica, disk.id, 8192, data);
    const changes = await hv.promotedChanges!(replica, disk.id);
    if (changes !== undefined) {
      // A superset is allowed; the written bytes must be covered.
      let covered = 0;
      for (const e of changes) {
        const from = Math.max(e.offset, 8192);
        const to = Math.min(e.offset + e.length, 8192 + data.length);
        if (to > from) covered += to - from;
      }
      expect(covered).toBe(data.length);
    }
    const live = await hv.openLiveDisk!(replica.id, disk.id, 'read');
    try {
      expect(live.size).toBe(disk.size);
      expect(Buffer.from(await live.read(8192, data.length)).equals(Buffer.from(data))).toBe(true);
    } finally {
      await live.close();
    }
    // A replica's live disk is never written by reverse replication.
    await expect(hv.openLiveDisk!(replica.id, disk.id, 'write')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await hv.demoteReplica!(replica);
  });
}
