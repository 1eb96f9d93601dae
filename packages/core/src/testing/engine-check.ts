import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Hypervisor } from '../contracts/index.js';
import { defineDriver } from '../drivers/define-driver.js';
import { DriverRegistry } from '../engine/driver-registry.js';
import { FileStateStore } from '../engine/file-state-store.js';
import { type EngineOptions, ReplicationEngine } from '../engine/run-engine.js';
import type { PlanMode, RunRecord } from '../engine/run-record.js';
import { type ConformanceCheckContext, ConformanceCheckError } from './conformance-checks.js';
import { compareBytes, readWholeDisk, testPattern } from './test-data.js';

/** Options of {@link checkEngineEndToEnd}. */
export interface EngineCheckOptions {
  /**
   * Let the engine use the driver's change tracker for the incremental run (`tracked`); `false`
   * hides the tracker so that the run compares hashes with the replica (`hash-diff`).
   */
  tracked: boolean;
  /**
   * With `tracked`, the incremental run must be `tracked`. Without it, a tracker may answer
   * `undefined` for the run's snapshots (tracking off for that VM) and the run be a `hash-diff`.
   * @default false
   */
  requireTracked?: boolean;
  /**
   * The engine's transport: `localTransport()` of `@replikit/transport` (core has no transport of
   * its own; the wire format lives there).
   */
  transport: EngineOptions['transport'];
  /**
   * The platform's disk size granule: the disk the check makes (its size a little over a whole
   * number of MiB, for a partial last block) is rounded up to a multiple of it. Hyper-V's VHDX
   * sizes are whole logical sectors (512).
   * @default 1
   */
  sizeGranule?: number;
}

/**
 * The driver as the engine sees it through a registry: its own `close()` does nothing (the engine
 * closes its drivers after every run; the check closes the real one), and without `tracked` it
 * shows no change tracker.
 */
function engineView(hv: Hypervisor, tracked: boolean): Hypervisor {
  return new Proxy(hv, {
    get(target, property) {
      if (property === 'close') return async () => undefined;
      if (property === 'changeTracker' && !tracked) return undefined;
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/**
 * The engine end to end, through the driver under test as both source and target: a full run,
 * guest writes (odd offsets, across block edges, the disk's last partial block), an incremental
 * run (tracked by the driver's tracker, or a hash diff), and after each run the replica equals the
 * source snapshot the run took, byte for byte, and that snapshot equals what the guest wrote. It
 * runs {@link ReplicationEngine} as the CLI does, with the given transport and a file state
 * store in a temporary folder; the job's rule sets are left out (the kind table is not the point
 * here). Skipped (returns `undefined`) unless the driver can be both source and target.
 *
 * @returns the plan mode of each run (`['full', 'tracked']` or `['full', 'hash-diff']`).
 * @throws ConformanceCheckError when a run fails, picks another mode than expected, or the replica
 * differs from the source snapshot.
 */
export async function checkEngineEndToEnd(
  ctx: ConformanceCheckContext,
  options: EngineCheckOptions,
): Promise<PlanMode[] | undefined> {
  const { hv, fixtures } = ctx;
  if (!hv.capabilities.canBeSource || !hv.capabilities.canBeTarget) return undefined;
  const granule = options.sizeGranule ?? 1;
  const size = Math.ceil((ctx.size + 5000) / granule) * granule; // a last, partial block
  const vm = await fixtures.createSourceVM(hv, { name: ctx.name, disks: [{ id: 'disk0', size }] });
  const diskId = vm.disks[0]!.id;
  const model = new Uint8Array(size);
  const write = async (offset: number, length: number, seed: number): Promise<void> => {
    const data = testPattern(seed, length);
    await fixtures.writeGuest(hv, vm.id, diskId, offset, data);
    model.set(data, offset);
  };
  const stateDir = await mkdtemp(join(tmpdir(), 'rk-conformance-engine-'));
  const drivers = new DriverRegistry().register(
    defineDriver({ kind: hv.kind, capabilities: hv.capabilities, create: () => engineView(hv, options.tracked) }),
  );
  const engine = new ReplicationEngine({
    stateStore: new FileStateStore(stateDir),
    drivers,
    ruleSets: [],
    transport: options.transport,
  });
  const job = {
    name: ctx.name,
    source: { driver: hv.kind, vm: vm.name },
    target: { driver: hv.kind, replicaName: `${ctx.name}-replica` },
    method: hv.capabilities.methods[0]!,
  };
  const modes: PlanMode[] = [];
  const runAndCompare = async (what: string, expected: PlanMode[]): Promise<void> => {
    const run: RunRecord = await engine.run(job);
    if (run.outcome !== 'completed') {
      throw new ConformanceCheckError(
        `the ${what} run ended ${run.outcome ?? run.state}: ${JSON.stringify(run.error)}`,
      );
    }
    const mode = run.disks[0]?.mode;
    if (!mode || !expected.includes(mode)) {
      throw new ConformanceCheckError(`the ${what} run was planned '${mode}', not '${expected.join("' or '")}'`);
    }
    modes.push(mode);
    const snapshot = run.snapshot ?? (await hv.listSnapshots(vm.id)).at(-1);
    if (!snapshot) throw new ConformanceCheckError(`the ${what} run left no snapshot of the source to compare with`);
    const source = await readWholeDisk(hv, snapshot.disks[0]!);
    const sourceVsGuest = compareBytes(source, model);
    if (sourceVsGuest !== 'equal') {
      throw new ConformanceCheckError(
        `after the ${what} run, the source snapshot differs from the guest's writes: ${sourceVsGuest}`,
      );
    }
    const replica = await hv.getVM(job.target.replicaName);
    const replicaVsSource = compareBytes(await readWholeDisk(hv, replica.disks[0]!), source);
    if (replicaVsSource !== 'equal') {
      throw new ConformanceCheckError(
        `after the ${what} run, the replica differs from the source snapshot: ${replicaVsSource}`,
      );
    }
  };
  try {
    await write(4095, 70_000, 1);
    await write(size - 3, 3, 2);
    await runAndCompare('first (full)', ['full']);
    await write(1, 10, 3); // the first block again
    await write(65_535, 2, 4); // across a 64 KiB edge
    await write(Math.floor(size / 2) + 7, 300_000, 5);
    await write(size - 4100, 4100, 6); // the last partial block and the one before
    if (!options.tracked || !hv.changeTracker) await runAndCompare('hash-diff', ['hash-diff']);
    else await runAndCompare('tracked', options.requireTracked ? ['tracked'] : ['tracked', 'hash-diff']);
    return modes;
  } finally {
    await engine.close();
    await rm(stateDir, { recursive: true, force: true });
  }
}
