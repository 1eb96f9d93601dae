import { readFile } from 'node:fs/promises';
import { JobError } from '../errors.js';
import { type JobSpec, jobSpecSchema } from './job-spec.js';
import { type JobIssue, toIssues } from './zod-issues.js';

export type { JobIssue } from './zod-issues.js';

/**
 * Validates a job already parsed from JSON or YAML and applies defaults.
 *
 * @throws {@link JobError} whose message lists every bad field (`path: problem`), one per line,
 * and whose `details.issues` holds them as {@link JobIssue}s.
 */
export function parseJob(input: unknown, source = 'job'): JobSpec {
  const result = jobSpecSchema.safeParse(input);
  if (result.success) return result.data;
  const issues: JobIssue[] = toIssues(result.error, input);
  const lines = issues.map((issue) => `${source}: ${issue.path}: ${issue.message}`);
  throw new JobError(lines.join('\n'), { details: { issues } });
}

/**
 * Reads a job file (`.json`, `.yaml` or `.yml`; anything else is tried as YAML, which includes
 * JSON) and validates it with {@link parseJob}.
 *
 * @throws {@link JobError} when the file cannot be read, is not valid YAML/JSON, or is not a job.
 */
export async function loadJobFile(path: string): Promise<JobSpec> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : (error as Error).message;
    throw new JobError(`cannot read job file ${path}: ${why}`, { cause: error });
  }
  let document: unknown;
  try {
    // The YAML parser is loaded only for a YAML file: a JSON job's one-shot run does not pay for it.
    document = path.endsWith('.json') ? JSON.parse(text) : (await import('yaml')).parse(text);
  } catch (error) {
    const first = (error as Error).message.split('\n')[0]?.replace(/:$/, '');
    throw new JobError(`${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${first}`, { cause: error });
  }
  if (document === null || document === undefined) {
    throw new JobError(`${path} is empty; a job needs at least name, source, target and method`);
  }
  return parseJob(document, path);
}
