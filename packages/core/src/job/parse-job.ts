import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { JobError } from '../errors.js';
import { type JobSpec, jobSpecSchema } from './job-spec.js';

/** One problem found in a job file, located by its dotted path (`options.retention`). */
export interface JobIssue {
  /** Dotted path of the field, or `(job)` for the whole document. */
  path: string;
  /** What is wrong, in words. */
  message: string;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${JSON.stringify(value)}`;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let value = root;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** Issue codes whose message gains the received value (`…, got string "three"`). */
const SHOWS_VALUE = new Set([
  'invalid_type',
  'invalid_value',
  'invalid_union',
  'invalid_format',
  'too_small',
  'too_big',
]);

function toIssues(error: z.ZodError, input: unknown): JobIssue[] {
  return error.issues.map((issue) => {
    const path = issue.path.length ? issue.path.map(String).join('.') : '(job)';
    let message = issue.message
      .replace(/^(Invalid input|Invalid option|Invalid string|Too small|Too big): /, '')
      .replace(/, received .*$/, '')
      .replace(/\bexpected int\b/, 'expected a whole number');
    if (issue.code === 'unrecognized_keys') {
      message = `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    } else if (SHOWS_VALUE.has(issue.code) && !/\bgot\b/.test(message)) {
      message = `${message}, got ${describe(valueAt(input, issue.path))}`;
    }
    return { path, message };
  });
}

/**
 * Validates a job already parsed from JSON or YAML and applies defaults.
 *
 * @throws {@link JobError} whose message lists every bad field (`path: problem`), one per line,
 * and whose `details.issues` holds them as {@link JobIssue}s.
 */
export function parseJob(input: unknown, source = 'job'): JobSpec {
  const result = jobSpecSchema.safeParse(input);
  if (result.success) return result.data;
  const issues = toIssues(result.error, input);
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
    document = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    const first = (error as Error).message.split('\n')[0]?.replace(/:$/, '');
    throw new JobError(`${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${first}`, { cause: error });
  }
  if (document === null || document === undefined) {
    throw new JobError(`${path} is empty; a job needs at least name, source, target and method`);
  }
  return parseJob(document, path);
}
