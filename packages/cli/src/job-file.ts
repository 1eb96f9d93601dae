import { dirname, isAbsolute, resolve } from 'node:path';
import { type JobSpec, loadJobFile } from '@replikit/core';

/**
 * Loads a job file for the CLI: relative `root` paths of its source and target are resolved
 * against the job file's folder, so a job can be run from anywhere.
 */
export async function loadJobForCli(path: string, cwd: string): Promise<JobSpec> {
  const absolute = resolve(cwd, path);
  const job = await loadJobFile(absolute);
  const base = dirname(absolute);
  for (const endpoint of [job.source, job.target] as Array<Record<string, unknown>>) {
    if (typeof endpoint.root === 'string' && !isAbsolute(endpoint.root)) endpoint.root = resolve(base, endpoint.root);
  }
  return job;
}
