import type { z } from 'zod';

/** One problem found in a job file, located by its dotted path (`options.retention`). */
export interface JobIssue {
  /** Dotted path of the field, or `(job)` for the whole document. */
  path: string;
  /** What is wrong, in words. */
  message: string;
}

/** How {@link toIssues} reports the fields a strict object does not know. */
export interface ToIssuesOptions {
  /**
   * `list`: one issue at the object, `unknown field 'a', 'b'`; `each`: one issue per field, at the
   * field's own path, `unknown field` (what a driver's options use: `source.rooot: unknown field`).
   * @default 'list'
   */
  unknownFields?: 'list' | 'each';
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

function pathOf(path: readonly PropertyKey[]): string {
  return path.length ? path.map(String).join('.') : '(job)';
}

/**
 * Turns zod's issues into located, readable ones: the dotted path of the field and what is wrong,
 * with the value received when it helps (`expected a whole number, got string "three"`).
 */
export function toIssues(error: z.ZodError, input: unknown, options: ToIssuesOptions = {}): JobIssue[] {
  return error.issues.flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') {
      if (options.unknownFields === 'each') {
        return issue.keys.map((key) => ({ path: pathOf([...issue.path, key]), message: 'unknown field' }));
      }
      const keys = issue.keys.map((k) => `'${k}'`).join(', ');
      return [{ path: pathOf(issue.path), message: `unknown field${issue.keys.length > 1 ? 's' : ''} ${keys}` }];
    }
    let message = issue.message
      .replace(/^(Invalid input|Invalid option|Invalid string|Too small|Too big): /, '')
      .replace(/, received .*$/, '')
      .replace(/\bexpected int\b/, 'expected a whole number');
    if (SHOWS_VALUE.has(issue.code) && !/\bgot\b/.test(message)) {
      message = `${message}, got ${describe(valueAt(input, issue.path))}`;
    }
    return [{ path: pathOf(issue.path), message }];
  });
}
