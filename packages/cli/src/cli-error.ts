import { isReplikitError } from '@replikit/core';
import { printableLine, printableLines } from './output/printable.js';

/** A usage error of the command line (exit code 2). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Exit codes: 0 success; 1 the work failed (a run failed, a verification found a difference, the
 * storage failed); 2 the input is wrong (usage, a job file, a rule, a bad value).
 */
export function exitCodeOf(error: unknown): number {
  if (error instanceof UsageError) return 2;
  if (isReplikitError(error)) return ['E_INPUT', 'E_JOB', 'E_RULE'].includes(error.code) ? 2 : 1;
  return 1;
}

/**
 * The message printed for an error: one line per problem (control characters escaped), never a
 * stack unless `debug`.
 */
export function describeForUser(error: unknown, debug: boolean): string {
  if (debug && error instanceof Error && error.stack) return error.stack;
  if (error instanceof UsageError) return `replikit: ${printableLine(error.message)} (see \`replikit help\`)`;
  // A broken-rules error lists one rule a line; any other message is one line, whatever a name in
  // it (a VM's, from a pool) holds.
  if (isReplikitError(error, 'E_RULE')) return `replikit: ${error.code}: ${printableLines(error.message)}`;
  if (isReplikitError(error)) return `replikit: ${error.code}: ${printableLine(error.message)}`;
  const message = printableLine(error instanceof Error ? error.message : String(error));
  return `replikit: unexpected error: ${message} (set REPLIKIT_DEBUG=1 to see where it came from)`;
}
