import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HyperVDriver, type PowerShellLink, type PsScript, SOURCE_SCRIPTS } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;

/**
 * The simulated host's link, except that the first `ConvertToReferencePoint` reaches the host and
 * then fails as a timed-out call does: the host made the reference point, the driver never saw it.
 */
function losingFirstConversion(link: PowerShellLink): PowerShellLink {
  let lost = false;
  return new Proxy(link, {
    get(target, key) {
      if (key !== 'call') return Reflect.get(target, key);
      return async (script: PsScript, params?: Record<string, unknown>, options?: { timeoutMs?: number }) => {
        const rows = await target.call(script, params, options);
        if (script.name === 'convert-to-reference-point' && !lost) {
          lost = true;
          throw new DriverError('the PowerShell call convert-to-reference-point timed out (simulated)');
        }
        return rows;
      };
    },
  });
}

async function collect(answer: AsyncIterable<{ offset: number; length: number }> | undefined) {
  if (!answer) return undefined;
  const out: { offset: number; length: number }[] = [];
  for await (const e of answer) out.push(e);
  return out;
}

describe('reference points a lost ConvertToReferencePoint made', { timeout: 180_000 }, () => {
  let sim: SimHost;
  beforeEach(async () => {
    sim = await startSimHost();
  });
  afterEach(async () => {
    await sim.close();
  });

  const referencePoints = async () =>
    (
      JSON.parse(await readFile(join(sim.host.root, 'rct.json'), 'utf8')) as {
        referencePoints: { instanceId: string }[];
      }
    ).referencePoints;

  it('the next run finds a point its lost conversion made and destroys it with its snapshot; a foreign point stays', async () => {
    await sim.makeVM('rp', [4 * MiB]);
    // A reference point another product made on the same VM: replikit never touches it.
    const script = (name: string) => SOURCE_SCRIPTS.find((s) => s.name === name)!;
    const vmId = (await sim.host.state()).vms.find((v) => v.name === 'rp')!.id;
    const [made] = await sim.link.call<{ Result: string }>(script('create-recovery-checkpoint'), { vmId });
    await sim.link.call(script('convert-to-reference-point'), { snapshot: made!.Result });
    const [foreign] = await referencePoints();

    const first = new HyperVDriver({ link: losingFirstConversion(sim.link), sharedLink: true });
    const vm = await first.getVM('rp');
    const s1 = await first.snapshot(vm.id, 's1');
    // The run's cleanup keeps s1 as the next base: its conversion is lost after the host made it.
    await expect(first.deleteSnapshot(s1, { keepMetadata: true })).rejects.toThrow(/timed out/);
    expect(await referencePoints()).toHaveLength(2);
    // The resumed run rolls back: s1 goes, and with it the point its conversion made.
    const next = sim.sharedDriver();
    await next.deleteSnapshot(s1);
    expect(await referencePoints()).toEqual([foreign]);
  });

  it('a lost conversion of a run base is adopted at once: the resumed run still gets RCT changes', async () => {
    await sim.makeVM('rb', [4 * MiB]);
    const first = new HyperVDriver({ link: losingFirstConversion(sim.link), sharedLink: true });
    const vm = await first.getVM('rb');
    const s1 = await first.snapshot(vm.id, 's1');
    await sim.host.guestWrite('rb', 0, 2 * MiB, testPattern(6, 4096));
    const s2 = await first.snapshot(vm.id, 's2');
    // Planning converts the base; the call is lost after the host made the point.
    await expect(first.changeTracker!.changes(s2.disks[0]!, s1, s2)).rejects.toThrow(/timed out/);
    expect(await referencePoints()).toHaveLength(1);
    const resumed = sim.sharedDriver();
    expect(await collect(await resumed.changeTracker!.changes(s2.disks[0]!, s1, s2))).toEqual([
      { offset: 2 * MiB, length: 4096 },
    ]);
    await resumed.deleteSnapshot(s1);
    await resumed.deleteSnapshot(s2);
    expect(await referencePoints()).toEqual([]);
  });
});
