/**
 * Every stable error code, in the order of {@link ErrorCode}'s list. Each has its own class
 * (`E_RULE` → {@link RuleError}, …) and a row in `docs/errors.md`.
 */
export const ERROR_CODES = [
  'E_INPUT',
  'E_JOB',
  'E_RULE',
  'E_NOT_FOUND',
  'E_CONFLICT',
  'E_REPLICA_IN_PROGRESS',
  'E_REPLICA_MODIFIED',
  'E_STATE',
  'E_FORMAT',
  'E_IO',
  'E_NO_SPACE',
  'E_TRANSPORT',
  'E_AUTH',
  'E_DRIVER',
  'E_ABORTED',
  'E_VERIFY',
  'E_INTERNAL',
  'E_FAILED_OVER',
  'E_SPLIT_BRAIN',
  'E_UNSUPPORTED',
  'E_LEASE_LOST',
  'E_STORE_VERSION',
] as const;

/**
 * Stable error codes. A code never changes meaning once released; new codes may be added.
 *
 * - `E_INPUT`: a value given by the caller is invalid (bad option, bad offset, bad job field).
 * - `E_JOB`: a job file cannot be read or parsed.
 * - `E_RULE`: a job breaks one or more validation rules.
 * - `E_NOT_FOUND`: a VM, disk, snapshot, replica, run or restore point does not exist.
 * - `E_CONFLICT`: the operation clashes with another one (a run already in progress, a locked disk).
 * - `E_REPLICA_IN_PROGRESS`: the replica is being written and must not be started or read as complete.
 * - `E_REPLICA_MODIFIED`: the replica changed outside replikit since the last run.
 * - `E_STATE`: an invalid state transition or a journal that cannot be used.
 * - `E_FORMAT`: a disk image, a journal or another file is malformed.
 * - `E_IO`: the storage failed (I/O error, no space left).
 * - `E_NO_SPACE`: the storage is full.
 * - `E_TRANSPORT`: the block channel failed.
 * - `E_AUTH`: authentication was refused.
 * - `E_DRIVER`: a driver failed for a reason of its own.
 * - `E_ABORTED`: the operation was cancelled through its `AbortSignal`.
 * - `E_VERIFY`: a verification found different data.
 * - `E_FAILED_OVER`: the replica's failover state does not allow the operation (a run into a
 *   promoted replica, an undo of a replica that was never failed over, a retired job).
 * - `E_SPLIT_BRAIN`: an unplanned failover was refused because the source VM is reachable and running.
 * - `E_UNSUPPORTED`: the driver lacks an optional capability the operation needs (failover hooks).
 * - `E_LEASE_LOST`: a write fenced by a replica lease was refused: the lease expired or another
 *   worker took it (its epoch is newer), so this worker must stop writing the replica.
 * - `E_STORE_VERSION`: the state store's schema is newer than this version of replikit.
 * - `E_INTERNAL`: something that is not a replikit error was thrown (a bug); a run's journal keeps
 *   it under this code.
 */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Options shared by every replikit error. */
export interface ReplikitErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** Structured facts about the failure, safe to log as JSON. */
  details?: Record<string, unknown>;
}

/**
 * The brand every {@link ReplikitError} carries. It is a registered symbol (`Symbol.for`), so an
 * error made by another installed copy of `@replikit/core` carries the same brand and is still
 * recognised by {@link isReplikitError} and `instanceof ReplikitError`.
 */
export const REPLIKIT_ERROR_BRAND: unique symbol = Symbol.for('replikit.error') as never;

/**
 * The base class of every error replikit throws. `code` is stable and documented; `message` says
 * what happened and what to do about it; `details` carries structured facts.
 */
export class ReplikitError extends Error {
  /** Marks replikit errors across installed copies of `@replikit/core` (see {@link REPLIKIT_ERROR_BRAND}). */
  readonly [REPLIKIT_ERROR_BRAND] = true;

  /** True for any error branded by some copy of `@replikit/core`, not only by this one. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: a subclass (`NotFoundError`) keeps the prototype check
    if (this !== ReplikitError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return (
      typeof value === 'object' &&
      value !== null &&
      (value as { [REPLIKIT_ERROR_BRAND]?: unknown })[REPLIKIT_ERROR_BRAND] === true
    );
  }

  /** The stable error code. */
  readonly code: ErrorCode;
  /** Structured facts about the failure. */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: ReplikitErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? {};
  }
}

/** A caller passed an invalid value. */
export class InputError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_INPUT', message, options);
  }
}

/**
 * A job file could not be read or does not match the job schema, or a side's fields do not match
 * its driver's options schema.
 */
export class JobError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_JOB', message, options);
  }
}

/**
 * A job breaks one or more validation rules of error severity; `details.violations` lists every
 * violation (see `assertValid`).
 */
export class RuleError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_RULE', message, options);
  }
}

/** Something that was asked for does not exist. */
export class NotFoundError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_NOT_FOUND', message, options);
  }
}

/** The operation conflicts with another one in progress. */
export class ConflictError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_CONFLICT', message, options);
  }
}

/** The replica is being written: it must not be started, and its content is not a complete version. */
export class ReplicaInProgressError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_REPLICA_IN_PROGRESS', message, options);
  }
}

/** The replica was changed outside replikit since the last run (booted or written). */
export class ReplicaModifiedError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_REPLICA_MODIFIED', message, options);
  }
}

/**
 * The replica's failover state does not allow the operation: a run into a promoted (failed-over)
 * replica, an undo or commit of a replica that is not failed over, any run of a retired job.
 * `details.state` names the state found.
 */
export class FailedOverError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_FAILED_OVER', message, options);
  }
}

/**
 * An unplanned failover was refused: the source VM answered and is running, so promoting the
 * replica would leave two live copies (split brain). Shut the source down or pass `force`.
 */
export class SplitBrainError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_SPLIT_BRAIN', message, options);
  }
}

/** The driver lacks an optional capability the operation needs (`details.capability` names it). */
export class UnsupportedError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_UNSUPPORTED', message, options);
  }
}

/**
 * A write fenced by a replica lease was refused: the lease expired, was released, or was taken by
 * another worker with a newer epoch. The worker that gets it must stop writing the replica; the
 * lease's new holder resumes the run from the journal. `details` names the replica and the epoch.
 */
export class LeaseLostError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_LEASE_LOST', message, options);
  }
}

/**
 * The state store's schema is newer than this version of replikit knows (another worker was
 * upgraded first): it is refused rather than written in an older shape. `details.found` and
 * `details.supported` name the versions.
 */
export class StoreVersionError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_STORE_VERSION', message, options);
  }
}

/** An invalid state transition, or a run journal that cannot be used. */
export class StateError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_STATE', message, options);
  }
}

/** A file (disk image, journal, metadata) is malformed. */
export class FormatError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_FORMAT', message, options);
  }
}

/**
 * The storage failed: the base of {@link IoError} (`E_IO`) and {@link NoSpaceError} (`E_NO_SPACE`).
 * Use {@link toStorageError} to classify a Node.js error.
 */
export class StorageError extends ReplikitError {
  constructor(code: 'E_IO' | 'E_NO_SPACE', message: string, options?: ReplikitErrorOptions) {
    super(code, message, options);
  }
}

/** The storage failed: an I/O error, or permission denied. */
export class IoError extends StorageError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_IO', message, options);
  }
}

/** The storage is full (`ENOSPC`, or a quota: `EDQUOT`). */
export class NoSpaceError extends StorageError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_NO_SPACE', message, options);
  }
}

/** The block channel between source and target failed. */
export class TransportError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_TRANSPORT', message, options);
  }
}

/** Authentication was refused: a transport peer's key or certificate, or a hypervisor's credentials. */
export class AuthError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_AUTH', message, options);
  }
}

/** A driver failed for a reason of its own. */
export class DriverError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_DRIVER', message, options);
  }
}

/** The operation was cancelled. */
export class AbortError extends ReplikitError {
  constructor(message = 'the operation was cancelled', options?: ReplikitErrorOptions) {
    super('E_ABORTED', message, options);
  }
}

/** A verification found that two things that must be equal are not. */
export class VerifyError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_VERIFY', message, options);
  }
}

/**
 * Something that is not a {@link ReplikitError} was thrown (a bug). A run's journal records such a
 * failure as `E_INTERNAL` with the original message; resuming that run rethrows it as this class.
 */
export class InternalError extends ReplikitError {
  constructor(message: string, options?: ReplikitErrorOptions) {
    super('E_INTERNAL', message, options);
  }
}

/** True when `error` is a {@link ReplikitError}, optionally with the given code. */
export function isReplikitError(error: unknown, code?: ErrorCode): error is ReplikitError {
  return error instanceof ReplikitError && (code === undefined || error.code === code);
}

/**
 * Turns a Node.js file-system error into a {@link StorageError} whose message names the file and
 * says what to do. `ENOSPC` and `EDQUOT` become a {@link NoSpaceError}; `ENOENT` becomes a
 * {@link NotFoundError}; anything else an {@link IoError}.
 * A {@link ReplikitError} is returned unchanged.
 */
export function toStorageError(error: unknown, what: string): ReplikitError {
  if (error instanceof ReplikitError) return error;
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  const path = (error as NodeJS.ErrnoException | undefined)?.path;
  const details = { errno, path };
  switch (errno) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new NoSpaceError(`no space left while ${what}; free space on that file system and retry`, {
        cause: error,
        details,
      });
    case 'ENOENT':
      return new NotFoundError(`${what}: ${path ?? 'a file'} does not exist`, { cause: error, details });
    case 'EACCES':
    case 'EPERM':
      return new IoError(`permission denied while ${what}${path ? ` (${path})` : ''}`, {
        cause: error,
        details,
      });
    default:
      return new IoError(`I/O error while ${what}: ${(error as Error)?.message ?? String(error)}`, {
        cause: error,
        details,
      });
  }
}

/** Throws an {@link AbortError} when `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    const reason = signal.reason;
    if (reason instanceof ReplikitError) throw reason;
    throw new AbortError(reason instanceof Error ? reason.message : 'the operation was cancelled', { cause: reason });
  }
}
