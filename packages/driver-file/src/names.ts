import { InputError } from '@replikit/core';

/** Longest name accepted for a VM, disk, file, snapshot or restore point. */
export const MAX_NAME_LENGTH = 200;

/**
 * Checks that `value` is a safe single path segment: a non-empty string of at most
 * {@link MAX_NAME_LENGTH} characters, without `/`, `\`, NUL or other control characters, that is
 * neither `.` nor `..` and does not start with `.` (names starting with a dot are reserved for the
 * driver's own temporary files). Every VM id, disk id, file name, snapshot id and restore point id
 * goes through it before it touches a path.
 *
 * @param value - The name to check (anything: it may come from a file or a journal).
 * @param what - What the name is, for the error message (`'VM name'`, `'disk id'`…).
 * @returns `value`, typed as a string.
 * @throws {@link @replikit/core!InputError} when the name is not safe.
 */
export function assertSafeName(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InputError(`${what} must be a non-empty string, got ${describe(value)}`, { details: { what } });
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what we refuse
  const hostile = /[/\\\u0000-\u001f\u007f]/.test(value) || value.startsWith('.') || value.includes('..');
  if (hostile || value.length > MAX_NAME_LENGTH) {
    throw new InputError(
      `${what} ${describe(value)} is not a safe name: use one folder name of at most ${MAX_NAME_LENGTH} characters, ` +
        `without '/', '\\', '..', control characters or a leading '.'`,
      { details: { what, value } },
    );
  }
  return value;
}

/** True when {@link assertSafeName} would accept `value`. */
export function isSafeName(value: unknown): value is string {
  try {
    assertSafeName(value, 'name');
    return true;
  } catch {
    return false;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  return value === null ? 'null' : typeof value;
}
