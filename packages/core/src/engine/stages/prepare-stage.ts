import { ConflictError, InputError } from '../../errors.js';
import { replicaNameOf } from '../../job/job-spec.js';
import { replicaChangeOf } from '../plan/replica-change.js';
import type { PrepareStart } from '../run-journal.js';
import { dropFinishedRunSnapshots } from './finished-run-snapshots.js';
import { holdForResume, holdReplica } from './replica-claim.js';
import { abandonReplica, releaseReplica } from './replica-rollback.js';
import type { RunContext, Stage } from './stage.js';

/**
 * `prepare`: finds or creates the replica and journals it, takes its hold, refuses a running
 * replica, and on the run's first pass journals where the run starts from (the restore point a
 * rollback returns to, the base snapshot, whether the replica changed outside replikit), and
 * deletes source snapshots that failed or rolled-back runs of the job left behind.
 * Undo: an abandoned run that never planned says what it left; the hold is released.
 */
export const prepareStage: Stage = {
  state: 'prepare',
  async run(ctx: RunContext): Promise<void> {
    const { record, signal } = ctx;
    const job = record.job;
    if (job.options.singlePass && !ctx.deps.backup) {
      throw new InputError(
        'options.singlePass needs a block store to record backup versions in; give the engine one (`backup: new FileBlockStore(dir)` from @replikit/dedup)',
      );
    }
    if (job.options.singlePass) await ctx.deps.backup?.check?.({ signal });
    const { source, target } = await ctx.drivers();
    const history = await ctx.jobHistory();
    const vm = await source.getVM(job.source.vm, { signal });
    const { driver: _driver, ...placement } = job.target;
    const found = await target.ensureReplica(
      {
        name: replicaNameOf(job),
        source: vm,
        disks: vm.disks.map((disk) => ({
          sourceDiskId: disk.id,
          size: disk.size,
          ...(disk.label ? { label: disk.label } : {}),
        })),
        placement,
        job: { name: job.name, method: job.method },
      },
      { signal },
    );
    const part = record.stages.prepare;
    // On a resume, keep what the first pass learnt: the replica was created by this run.
    const replica = { ...found, created: (part?.replica.created ?? false) || found.created };
    record.stages.prepare = { ...part, replica };
    const firstPass = part?.start === undefined;
    // Read before the hold is taken: writes another session left pending count as a change.
    const state =
      firstPass && history?.replicaFingerprint && !replica.created
        ? await target.replicaState(replica, { signal })
        : undefined;
    await holdReplica(ctx, target, replica);
    const replicaVm = await target.getVM(replica.id, { signal });
    if (replicaVm.powerState === 'running') {
      throw new ConflictError(
        `replica '${replica.name}' is running; shut it down (or fail over properly) before replicating into it`,
      );
    }
    if (firstPass) {
      const points = await target.listRestorePoints(replica, { signal });
      const start: PrepareStart = {
        restorePointBefore: points[points.length - 1] ?? null,
        ...(history?.baseSnapshot ? { baseSnapshot: history.baseSnapshot } : {}),
      };
      if (state !== undefined && state.value !== history?.replicaFingerprint) {
        start.replicaChange = replicaChangeOf(history?.replicaFingerprintDetails, state.details);
        ctx.warn(
          'W_REPLICA_MODIFIED',
          `replica '${replica.name}' changed since the last run (reverted to a restore point, booted, written outside replikit, or left with another session's pending writes, which are dropped); this run compares every block with it`,
        );
      }
      record.stages.prepare.start = start;
      // A failed or rolled-back run of this job may have left a snapshot its undo never saw.
      await dropFinishedRunSnapshots(ctx, source, vm.id, history?.baseSnapshot);
    }
    await ctx.save();
  },
  ran: (ctx) => ctx.record.stages.prepare !== undefined,
  async resume(ctx: RunContext): Promise<void> {
    const part = ctx.record.stages.prepare;
    if (part) await holdForResume(ctx, part.replica);
  },
  async undo(ctx, ending): Promise<void> {
    const replica = ctx.record.stages.prepare?.replica;
    if (!replica) return;
    const { target } = await ctx.drivers();
    // A run that planned said what it dropped when its plan was undone.
    if (ending === 'abandon' && ctx.record.stages.plan === undefined) await abandonReplica(ctx, target, replica);
    await releaseReplica(ctx, target, replica);
  },
};
