import {
  defaultDriverRegistry,
  type FailoverRecord,
  type JobSpec,
  listOrphans,
  type Orphan,
  type StateStore,
} from '@replikit/core';

/**
 * A job's orphans (failover clones no operation owns, snapshots of its runs that are neither the
 * next base nor in use), through its own drivers; none when a side cannot be reached (say so with
 * `unreachable`).
 */
export async function orphansOfJob(
  job: JobSpec,
  stateStore: StateStore,
  failover: FailoverRecord | undefined,
): Promise<{ orphans: Orphan[]; unreachable?: 'source' | 'target' }> {
  const source = await defaultDriverRegistry.create(job.source, { side: 'source' }).catch(() => undefined);
  const target = await defaultDriverRegistry.create(job.target, { side: 'target' }).catch(() => undefined);
  try {
    if (!source) return { orphans: [], unreachable: 'source' };
    if (!target) return { orphans: [], unreachable: 'target' };
    const unfinished = await stateStore.findUnfinished?.(job.name);
    const inUse = unfinished?.stages.snapshot?.snapshot.id;
    const orphans = await listOrphans({
      job: job.name,
      sourceVm: job.source.vm,
      source,
      target,
      history: await stateStore.loadJob(job.name),
      failover,
      ...(inUse ? { inUse: [inUse] } : {}),
    });
    return { orphans };
  } finally {
    await source?.close();
    await target?.close();
  }
}
