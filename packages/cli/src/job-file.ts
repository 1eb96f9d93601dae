import { dirname, isAbsolute, resolve } from 'node:path';
import { type JobSpec, loadJobFile } from '@replikit/core';
import { checkTransportSection } from './transport-section.js';

/**
 * The endpoint fields that name a local file or folder, in the drivers the CLI ships: the file
 * driver's `root`, the xen driver's `credentialsFile` and `spoolDir`.
 */
const ENDPOINT_PATH_FIELDS = ['root', 'credentialsFile', 'spoolDir'] as const;

/**
 * Loads a job file for the CLI: relative paths of its source and target
 * ({@link ENDPOINT_PATH_FIELDS}), and relative key and certificate files of its `transport`
 * section, are resolved against the job file's folder, so a job can be run from anywhere. Its
 * `transport` section is checked first (every field known).
 */
export async function loadJobForCli(path: string, cwd: string): Promise<JobSpec> {
  const absolute = resolve(cwd, path);
  const job = await loadJobFile(absolute);
  checkTransportSection(job.transport);
  const base = dirname(absolute);
  for (const endpoint of [job.source, job.target] as Array<Record<string, unknown>>) {
    for (const field of ENDPOINT_PATH_FIELDS) {
      const value = endpoint[field];
      if (typeof value === 'string' && !isAbsolute(value)) endpoint[field] = resolve(base, value);
    }
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
