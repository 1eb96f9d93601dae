import { randomInt } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { afterEach, describe, it } from 'vitest';
import { type CrashMatrixHeld, runCrashMatrix } from './helpers/xen-crash-matrix.js';

/*
 * Issue 17, crash safety of an ABD pull run (job `method: abd, options.direction: pull`): the
 * engine is SIGKILLed at seeded random points while the target appliance pulls from the source
 * appliance, then resumed or rolled back; see helpers/xen-crash-matrix.ts for what each point
 * checks. REPLIKIT_XEN_PULL_CRASH_POINTS (or REPLIKIT_CRASH_POINTS; default 8) and
 * REPLIKIT_XEN_CRASH_SEED choose the points.
 */

const POINTS = Number(process.env.REPLIKIT_XEN_PULL_CRASH_POINTS ?? process.env.REPLIKIT_CRASH_POINTS ?? 8);
const SEED = Number(process.env.REPLIKIT_XEN_CRASH_SEED ?? randomInt(2 ** 31));

describe('SIGKILL of the engine at random points of a xen ► xen abd pull run, then resume', () => {
  const held: CrashMatrixHeld = {};
  afterEach(async () => {
    await held.xen?.close();
    await held.pool?.close();
    if (held.dir) await rm(held.dir, { recursive: true, force: true });
    held.xen = undefined;
    held.pool = undefined;
    held.dir = undefined;
  });

  it(`abd pull, the target appliance pulling: ${POINTS} kills, each replica is the new or the previous version`, async () => {
    await runCrashMatrix(
      { name: 'abd-pull', method: 'abd', direction: 'pull', points: POINTS, seed: SEED, seedOffset: 2 },
      held,
    );
  }, 180_000);
});
