import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  AbortError,
  AuthError,
  ConflictError,
  DriverError,
  ERROR_CODES,
  type ErrorCode,
  FailedOverError,
  FormatError,
  InputError,
  InternalError,
  IoError,
  isReplikitError,
  JobError,
  LeaseLostError,
  NoSpaceError,
  NotFoundError,
  REPLIKIT_ERROR_BRAND,
  ReplicaInProgressError,
  ReplicaModifiedError,
  ReplikitError,
  RuleError,
  SplitBrainError,
  StateError,
  StorageError,
  StoreVersionError,
  TransportError,
  toStorageError,
  UnsupportedError,
  VerifyError,
} from '../src/errors.js';
import * as core from '../src/index.js';
import { WARNING_CODES } from '../src/warnings.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Every `.ts` file under `dir`, recursively. */
async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

/** The `E_*`/`W_*` codes inside string literals (quotes or backticks) of `text`. */
function codesIn(text: string): string[] {
  const codes: string[] = [];
  for (const literal of text.match(/'[^'\n]*'|"[^"\n]*"|`[^`]*`/g) ?? []) {
    codes.push(...(literal.match(/\b[EW]_[A-Z_]+\b/g) ?? []));
  }
  return codes;
}

describe('docs/errors.md', () => {
  it('lists every E_* and W_* code used in packages/*/src', async () => {
    const doc = await readFile(join(repo, 'docs/errors.md'), 'utf8');
    const listed = new Set(doc.match(/`[EW]_[A-Z_]+`/g)?.map((c) => c.slice(1, -1)));
    const missing = new Map<string, string>();
    const packages = await readdir(join(repo, 'packages'));
    for (const pkg of packages) {
      const src = join(repo, 'packages', pkg, 'src');
      const files = await sources(src).catch(() => []);
      for (const file of files) {
        for (const code of codesIn(await readFile(file, 'utf8'))) {
          if (!listed.has(code)) missing.set(code, file.slice(repo.length + 1));
        }
      }
    }
    expect(Object.fromEntries(missing)).toEqual({});
    expect(listed.size).toBeGreaterThan(20);
  });

  it('lists exactly the codes of ERROR_CODES and WARNING_CODES, and no other', async () => {
    const doc = await readFile(join(repo, 'docs/errors.md'), 'utf8');
    const listed = [...new Set(doc.match(/`[EW]_[A-Z_]+`/g)?.map((c) => c.slice(1, -1)))];
    expect(listed.filter((code) => code.startsWith('E_')).sort()).toEqual([...ERROR_CODES].sort());
    expect(listed.filter((code) => code.startsWith('W_')).sort()).toEqual([...WARNING_CODES].sort());
  });

  it('finds codes in every kind of string literal, not outside them', () => {
    expect(codesIn(`throw x('E_ONE'); warn("W_TWO: a"); \`see E_THREE\`; const E_FOUR = 1;`)).toEqual([
      'E_ONE',
      'W_TWO',
      'E_THREE',
    ]);
  });
});

describe('ReplikitError brand', () => {
  it('recognises an error made by another installed copy of @replikit/core', () => {
    // What a second copy of core would define: its own class, the same registered brand.
    class OtherCopyError extends Error {
      readonly code = 'E_NOT_FOUND';
      constructor(message: string) {
        super(message);
        Object.defineProperty(this, Symbol.for('replikit.error'), { value: true });
      }
    }
    const foreign = new OtherCopyError('no VM x');
    expect(isReplikitError(foreign)).toBe(true);
    expect(isReplikitError(foreign, 'E_NOT_FOUND')).toBe(true);
    expect(isReplikitError(foreign, 'E_INPUT')).toBe(false);
    expect(foreign instanceof ReplikitError).toBe(true);
    expect(REPLIKIT_ERROR_BRAND).toBe(Symbol.for('replikit.error'));
  });

  it('still tells subclasses and plain errors apart', () => {
    const own = new NotFoundError('x');
    expect(own instanceof ReplikitError).toBe(true);
    expect(own instanceof NotFoundError).toBe(true);
    expect(new Error('x') instanceof ReplikitError).toBe(false);
    expect(isReplikitError(new Error('x'))).toBe(false);
    expect(isReplikitError({ code: 'E_IO' })).toBe(false);
    expect(isReplikitError(null)).toBe(false);
    expect(new ReplikitError('E_IO', 'x') instanceof NotFoundError).toBe(false);
  });
});

/** One class per code; typed as a complete record, so a new code without a class fails to compile. */
const CLASSES: Record<ErrorCode, new (message: string) => ReplikitError> = {
  E_INPUT: InputError,
  E_JOB: JobError,
  E_RULE: RuleError,
  E_NOT_FOUND: NotFoundError,
  E_CONFLICT: ConflictError,
  E_REPLICA_IN_PROGRESS: ReplicaInProgressError,
  E_REPLICA_MODIFIED: ReplicaModifiedError,
  E_STATE: StateError,
  E_FORMAT: FormatError,
  E_IO: IoError,
  E_NO_SPACE: NoSpaceError,
  E_TRANSPORT: TransportError,
  E_AUTH: AuthError,
  E_DRIVER: DriverError,
  E_ABORTED: AbortError,
  E_VERIFY: VerifyError,
  E_INTERNAL: InternalError,
  E_FAILED_OVER: FailedOverError,
  E_SPLIT_BRAIN: SplitBrainError,
  E_UNSUPPORTED: UnsupportedError,
  E_LEASE_LOST: LeaseLostError,
  E_STORE_VERSION: StoreVersionError,
};

describe('error classes', () => {
  it('every code has its own exported class whose errors carry the code and the class name', () => {
    for (const code of ERROR_CODES) {
      const Class = CLASSES[code];
      const error = new Class('what happened; what to do');
      expect({ code: error.code, name: error.name }).toEqual({ code, name: Class.name });
      expect(isReplikitError(error, code)).toBe(true);
      expect((core as Record<string, unknown>)[Class.name]).toBe(Class);
    }
    expect(new Set(Object.values(CLASSES)).size).toBe(ERROR_CODES.length);
  });

  it('classifies storage failures into the two StorageError classes', () => {
    const full = toStorageError(Object.assign(new Error('x'), { code: 'ENOSPC', path: '/d' }), 'writing /d');
    const denied = toStorageError(Object.assign(new Error('x'), { code: 'EACCES', path: '/d' }), 'reading /d');
    expect(full).toBeInstanceOf(NoSpaceError);
    expect(denied).toBeInstanceOf(IoError);
    expect(full).toBeInstanceOf(StorageError);
    expect([full.code, denied.code]).toEqual(['E_NO_SPACE', 'E_IO']);
  });
});
