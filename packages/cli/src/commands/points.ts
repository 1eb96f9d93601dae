import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  ConflictError,
  defaultDriverRegistry,
  type Hypervisor,
  type JobSpec,
  NotFoundError,
  type Replica,
  type RestorePoint,
  replicaNameOf,
} from '@replikit/core';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { driverPackageOf, loadDriverPackages } from '../drivers.js';
import { loadJobForCli } from '../job-file.js';
import { remoteTargetForJob } from '../transport-option.js';

/** Opens the job's target driver and finds its replica there (without the source, without creating it). */
async function openReplica(job: JobSpec, context: CliContext): Promise<{ target: Hypervisor; replica: Replica }> {
  // A job whose agent hosts the replica: everything goes through the agent.
  const remote = remoteTargetForJob(job, { base: context.cwd, env: context.env });
  if (remote) return findReplica(job, remote);
  if ((await loadDriverPackages(job)).includes(job.target.driver)) {
    throw new NotFoundError(
      `the driver of kind '${job.target.driver}' is not installed; install it with \`npm install ${driverPackageOf(job.target.driver)}\``,
    );
  }
  return findReplica(job, await defaultDriverRegistry.create(job.target, { side: 'target' }));
}

/** The job's replica on `target` (closed when it cannot be found). */
async function findReplica(job: JobSpec, target: Hypervisor): Promise<{ target: Hypervisor; replica: Replica }> {
  const name = replicaNameOf(job);
  try {
    const vm = await target.getVM(name);
    return { target, replica: { id: vm.id, name: vm.name, disks: vm.disks, created: false } };
  } catch (error) {
    await target.close();
    throw error;
  }
}

/** One line per restore point: id, creation time, label (the run that made it). */
function renderPoints(replica: Replica, points: RestorePoint[]): string {
  if (points.length === 0) return `replica '${replica.name}' has no restore point yet\n`;
  const lines = points.map(
    (p, i) => `${p.id}  ${p.createdAt}  ${p.label}${i === points.length - 1 ? '  (newest)' : ''}`,
  );
  return `restore points of replica '${replica.name}', oldest first:\n${lines.join('\n')}\n`;
}

/**
 * `replikit points list <job> [--json]` and `replikit points revert <job> <point-id>`: a replica's
 * restore points, read through the job's target driver (the source is not needed: it may be the
 * site that was lost). A revert takes the replica's hold for its duration and refuses while a run
 * holds it. A revert drops the restore points newer than the one it returns to.
 */
export async function pointsCommand(context: CliContext, args: string[], json: boolean): Promise<number> {
  const [sub, file, pointId, ...extra] = args;
  if (sub === 'list') {
    if (file === undefined || pointId !== undefined) throw new UsageError('points list takes one job file');
  } else if (sub === 'revert') {
    if (file === undefined || pointId === undefined || extra.length > 0) {
      throw new UsageError('points revert takes a job file and a restore point id');
    }
  } else {
    throw new UsageError(`points takes list or revert, got ${sub === undefined ? 'nothing' : `'${sub}'`}`);
  }
  const job = await loadJobForCli(file, context.cwd);
  const { target, replica } = await openReplica(job, context);
  try {
    const points = await target.listRestorePoints(replica, { signal: context.signal });
    if (sub === 'list') {
      context.stdout.write(json ? `${JSON.stringify(points, null, 2)}\n` : renderPoints(replica, points));
      return 0;
    }
    const point = points.find((p) => p.id === pointId);
    if (!point) {
      throw new NotFoundError(
        `replica '${replica.name}' has no restore point '${pointId}'; see \`replikit points list ${file}\``,
      );
    }
    await revertHolding(target, replica, point, context);
    const dropped = points.length - 1 - points.indexOf(point);
    const what = dropped === 0 ? 'no newer point' : `the ${dropped} newer point${dropped > 1 ? 's' : ''} dropped`;
    context.stdout.write(
      `replica '${replica.name}' reverted to restore point ${point.id} (${point.createdAt}; ${what}); the next run compares the whole replica\n`,
    );
    return 0;
  } finally {
    await target.close();
  }
}

/** Reverts `replica` to `point` under a hold of its own, refusing when a run holds the replica. */
async function revertHolding(target: Hypervisor, replica: Replica, point: RestorePoint, context: CliContext) {
  const runId = `revert-${randomBytes(6).toString('hex')}`;
  const owner = { runId, host: hostname(), pid: process.pid, startedAt: new Date().toISOString() };
  const holder = await target.claimReplica(replica, owner, { signal: context.signal });
  if (holder.runId !== runId) {
    throw new ConflictError(
      `replica '${replica.name}' is held by run ${holder.runId} (pid ${holder.pid} on ${holder.host}${holder.stateDir ? `, state folder ${holder.stateDir}` : ''}); nothing was reverted: let it finish, or end it with \`replikit resume ${holder.runId} --rollback\` (or \`--abandon\`) first`,
    );
  }
  try {
    await target.revertTo(replica, point, { signal: context.signal });
  } finally {
    await target.releaseReplica(replica, runId);
  }
}
