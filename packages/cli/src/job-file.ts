import { dirname, isAbsolute, resolve } from 'node:path';
import { type JobSpec, loadJobFile } from '@replikit/core';
import { checkTransportSection } from './transport-section.js';

/**
 * Loads a job file for the CLI: relative `root` paths of its source and target, and relative key
 * and certificate files of its `transport` section, are resolved against the job file's folder, so
 * a job can be run from anywhere. Its `transport` section is checked first (every field known).
 */
export async function loadJobForCli(path: string, cwd: string): Promise<JobSpec> {
  const absolute = resolve(cwd, path);
  const job = await loadJobFile(absolute);
  checkTransportSection(job.transport);
  const base = dirname(absolute);
  for (const endpoint of [job.source, job.target] as Array<Record<string, unknown>>) {
    if (typeof endpoint.root === 'string' && !isAbsolute(endpoint.root)) endpoint.root = resolve(base, endpoint.root);
  }
  const transport = job.transport as Record<string, unknown>;
  const files: Array<[string, string]> = [
    ['psk', 'keyFile'],
    ['key', 'keyFile'],
    ['certificate', 'cert'],
    ['certificate', 'key'],
  ];
  for (const [section, field] of files) {
    const entry = transport[section];
    if (typeof entry !== 'object' || entry === null) continue;
    const value = (entry as Record<string, unknown>)[field];
    if (typeof value === 'string' && !isAbsolute(value))
      (entry as Record<string, unknown>)[field] = resolve(base, value);
  }
  return job;
}
