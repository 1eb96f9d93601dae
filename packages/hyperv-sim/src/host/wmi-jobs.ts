import { randomUUID } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { WmiJobMode } from './host-files.js';

/** `Msvm_ConcreteJob.JobState` values the simulator uses (CIM_ConcreteJob: 4 Running, 7 Completed, …). */
export const JOB_RUNNING = 4;
export const JOB_COMPLETED = 7;

/** An element a job affected (`Msvm_AffectedJobElement`): its class and its key (`InstanceID` or `Name`). */
export interface AffectedElement {
  readonly className: string;
  readonly key: string;
}

/** One `Msvm_ConcreteJob` of the simulated host. */
export interface WmiJobRecord {
  instanceId: string;
  /** The method that started it. */
  method: string;
  /** What the method was asked to work on (ids resolved from its reference arguments). */
  target: Record<string, string>;
  /** Reads of the job left before it ends. */
  pollsLeft: number;
  fail?: WmiJobMode['fail'];
  jobState: number;
  errorCode: number;
  errorDescription: string;
  affected: AffectedElement[];
}

interface JobsFile {
  jobs: WmiJobRecord[];
}

function file(root: string): string {
  return join(root, 'wmi-jobs.json');
}

/** The host's jobs, oldest first. */
export async function loadJobs(root: string): Promise<WmiJobRecord[]> {
  try {
    return (JSON.parse(await readFile(file(root), 'utf8')) as JobsFile).jobs;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** Saves the host's jobs atomically. */
export async function saveJobs(root: string, jobs: WmiJobRecord[]): Promise<void> {
  const tmp = `${file(root)}.${randomUUID()}.tmp`;
  await writeFile(tmp, `${JSON.stringify({ jobs } satisfies JobsFile)}\n`);
  await rename(tmp, file(root));
}

/** A new running job of `method` on `target`, as `mode` says it ends. */
export function newJob(method: string, target: Record<string, string>, mode: WmiJobMode): WmiJobRecord {
  return {
    instanceId: randomUUID().toUpperCase(),
    method,
    target,
    pollsLeft: Math.max(0, Math.floor(mode.polls)),
    ...(mode.fail ? { fail: mode.fail } : {}),
    jobState: JOB_RUNNING,
    errorCode: 0,
    errorDescription: '',
    affected: [],
  };
}
