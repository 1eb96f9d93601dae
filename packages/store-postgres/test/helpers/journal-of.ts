import type { RunJournal, RunState } from '@replikit/core';

/** A small run journal of run `runId` of job `job` in `state` (no vitest: child processes import it). */
export function journalOf(runId: string, job: string, state: RunState): RunJournal {
  const at = '2026-12-07T04:00:00.000Z';
  return {
    version: 2,
    runId,
    job: { name: job, source: { driver: 'memsrc', vm: 'vm1' }, target: { driver: 'memdst' }, method: 'qhybrid' },
    state,
    startedAt: at,
    updatedAt: at,
    pid: process.pid,
    history: [{ state: 'created', at }],
    blockSize: 65536,
    digest: 'xxh128',
    disks: [],
    stats: {},
    warnings: [],
    stages: {},
  } as unknown as RunJournal;
}
