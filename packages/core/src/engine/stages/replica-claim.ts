import { isAbsolute } from 'node:path';
import type { Hypervisor, Replica } from '../../contracts/hypervisor.js';
import { ConflictError } from '../../errors.js';
import { FileStateStore } from '../file-state-store.js';
import { heldByAnother, ownerOfRun, runIsAlive } from '../replica-hold.js';
import type { RunJournal } from '../run-journal.js';
import { emptyStats, sumStats } from '../run-record.js';
import { isTerminal } from '../run-state.js';
import { fenced } from './fence-option.js';
import type { RunContext } from './stage.js';

/**
 * Takes the replica for this run (its owner record on the target side), or fails with
 * `E_CONFLICT` naming the run that holds it. A hold left by a dead run of this same store whose
 * journal is gone or ended is taken over: nothing could ever resume that run.
 */
export async function holdReplica(ctx: RunContext, target: Hypervisor, replica: Replica): Promise<void> {
  const record = ctx.record;
  const owner = ownerOfRun(record, ctx.deps.stateDir);
  // The journal must name the run before its hold exists: a crash between the two leaves a
  // hold that `resume` can take again, never one no journal knows.
  await ctx.save();
  // Under a lease, the claim raises the target's fence to this run's epoch: from now on a worker
  // that held an older lease (paused past it) can no longer commit or revert the replica.
  const options = { signal: ctx.signal, ...fenced(ctx) };
  let holder = await target.claimReplica(replica, owner, options);
  if (holder.runId !== record.runId && (await isStale(ctx, holder))) {
    await target.releaseReplica(replica, holder.runId, { signal: ctx.signal });
    holder = await target.claimReplica(replica, owner, options);
  }
  if (holder.runId !== record.runId) {
    throw heldByAnother(replica.name, holder, `run ${record.runId} stopped before writing anything`);
  }
}

/**
 * True for the hold of a dead run (its process gone, on this host) that no journal lists as
 * unfinished: its state folder (this one, or the one its owner record names) no longer holds the
 * run, or holds it ended. Nothing could ever resume or abandon such a run, so its hold is taken
 * over. A journal that cannot be read keeps the hold: only a journal that says so frees it.
 */
async function isStale(
  ctx: RunContext,
  holder: { runId: string; pid: number; host: string; stateDir?: string },
): Promise<boolean> {
  if (runIsAlive(holder.pid, holder.host) !== false) return false;
  const own = ctx.deps.stateDir !== undefined && holder.stateDir === ctx.deps.stateDir;
  if (!own && (holder.stateDir === undefined || !isAbsolute(holder.stateDir))) return false;
  const store = own ? ctx.deps.store : new FileStateStore(holder.stateDir!);
  let journal: RunJournal | undefined;
  try {
    journal = await store.loadRun(holder.runId);
  } catch {
    return own;
  }
  return journal === undefined || isTerminal(journal.state);
}

/**
 * A resumed run takes its replica again; it goes on only from the restore point it started from.
 * Taking the replica drops pending writes the driver cannot tell as this run's (a journal of an
 * older version, whose writes carry no run id); that changes the fingerprint, and then the
 * checkpoints no longer say what the replica holds: the transfer starts again.
 */
export async function holdForResume(ctx: RunContext, replica: Replica): Promise<void> {
  const record = ctx.record;
  const { target } = await ctx.drivers();
  const wrote = record.disks.some((disk) => disk.checkpointBlock > 0 || disk.done);
  const pending = wrote ? (await target.replicaState(replica, { signal: ctx.signal })).value : undefined;
  await holdReplica(ctx, target, replica);
  if (pending !== undefined && (await target.replicaState(replica, { signal: ctx.signal })).value !== pending) {
    restartTransfer(ctx);
  }
  const conflict = await newerPoint(ctx, target, replica);
  if (conflict) {
    throw new ConflictError(
      `${conflict}; run ${record.runId} can no longer finish: end it with \`replikit resume ${record.runId} --abandon\``,
      { details: { runId: record.runId } },
    );
  }
}

/** Forgets every checkpoint of the transfer: its writes were dropped, they are made again. */
function restartTransfer(ctx: RunContext): void {
  const record = ctx.record;
  const name = record.stages.prepare?.replica.name;
  if (record.state === 'commit') {
    throw new ConflictError(
      `the writes run ${record.runId} left pending on replica '${name}' are gone (a journal of an older version?); roll the run back with \`replikit resume ${record.runId} --rollback\` and run the job again`,
    );
  }
  for (const disk of record.disks) {
    disk.checkpointBlock = 0;
    disk.done = false;
    disk.stats = emptyStats();
  }
  sumStats(record);
  ctx.warn(
    'W_TRANSFER_RESTARTED',
    `the writes run ${record.runId} left pending on replica '${name}' were not its own as far as the replica can tell (journaled by an older version?) and were dropped; the transfer starts again from the first block`,
  );
}

/**
 * Says why the replica is not where this run left it: a restore point this run did not make is
 * newer than its base, or its base is gone. `undefined` when the newest point is the base (or
 * this run's own).
 */
export async function newerPoint(ctx: RunContext, target: Hypervisor, replica: Replica): Promise<string | undefined> {
  const record = ctx.record;
  const before = record.stages.prepare?.start?.restorePointBefore;
  const points = await target.listRestorePoints(replica, { signal: ctx.signal });
  const newest = points.at(-1);
  if (newest?.label === record.runId) return undefined;
  if (before ? newest?.id === before.id : newest === undefined) return undefined;
  const base = before ? `restore point ${before.id}` : 'no restore point';
  const gone = before && !points.some((p) => p.id === before.id) ? ', which is gone' : '';
  return newest
    ? `replica '${replica.name}' has restore point ${newest.id} (of run ${newest.label}), newer than the one run ${record.runId} started from (${base}${gone})`
    : `replica '${replica.name}' no longer has ${base}, which run ${record.runId} started from`;
}
