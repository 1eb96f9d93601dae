import { Cron } from 'croner';
import { z } from 'zod';
import { parseDuration } from './duration.js';

/**
 * A duration field: seconds as a number, or a string such as `30s`, `5m`, `1h30m`. Kept as written
 * (a parsed job parses again to the same value); {@link parseDuration} reads it where it is used.
 */
export const durationSchema = z
  .union([z.number(), z.string()], { error: 'expected a duration: seconds, or a value such as "30s" or "5m"' })
  .superRefine((value, ctx) => {
    try {
      parseDuration(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message.replace(/^duration: /, '') });
    }
  });

/** True when croner accepts `expression` (5 fields, or 6 with seconds first) in `timezone`. */
function cronProblem(expression: string, timezone: string | undefined): string | undefined {
  const fields = expression.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) {
    return `expected a cron expression of five fields (or six, seconds first), such as "0 */4 * * *", got ${fields}`;
  }
  try {
    new Cron(expression, { paused: true, ...(timezone ? { timezone } : {}) }).nextRun();
    return undefined;
  } catch (error) {
    return `${JSON.stringify(expression)}${timezone ? ` in time zone ${timezone}` : ''} is not a valid schedule: ${(error as Error).message}`;
  }
}

const cronObject = z
  .object({
    cron: z.string(),
    /** An IANA time zone, such as `Europe/Paris`; default: the daemon's. */
    timezone: z.string().min(1).optional(),
  })
  .strict();

const everyObject = z.object({ every: durationSchema }).strict();

/**
 * `options.schedule`: a cron string (five fields, or six with seconds first; the daemon's time
 * zone), `{ cron, timezone }`, or `{ every: "30s" }` (slots at whole multiples of the interval
 * since the epoch, so they do not move when the daemon restarts).
 */
export const scheduleSchema = z
  .union([z.string(), cronObject, everyObject], {
    error: 'expected a cron expression, { cron, timezone } or { every: "30s" }',
  })
  .superRefine((value, ctx) => {
    if (typeof value === 'object' && 'every' in value) {
      if (safeDuration(value.every) < 1000) ctx.addIssue({ code: 'custom', message: 'an interval is at least 1s' });
      return;
    }
    const expression = typeof value === 'string' ? value : value.cron;
    const timezone = typeof value === 'string' ? undefined : value.timezone;
    const problem = cronProblem(expression, timezone);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

/**
 * One maintenance window: it opens at each occurrence of `cron` (five fields, or six with seconds
 * first; in `timezone`, default the daemon's) and stays open for `duration`. Transfers run only
 * while a window of the job is open.
 */
export const windowSchema = z
  .object({
    cron: z.string(),
    /** How long the window stays open after each occurrence (at least 1 s). */
    duration: durationSchema,
    /** An IANA time zone, such as `Europe/Paris`; default: the daemon's. */
    timezone: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((value, ctx) => {
    const problem = cronProblem(value.cron, value.timezone);
    if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['cron'] });
    if (!(safeDuration(value.duration) >= 1000)) {
      ctx.addIssue({ code: 'custom', message: 'a window lasts at least 1s', path: ['duration'] });
    }
  });

/** `options.retry`: how a failed run is retried (transient errors only, see `classifyError`). */
export const retrySchema = z
  .object({
    /** Retries after the first failure of a slot. @default 3 */
    attempts: z.number().int().min(0).max(100).default(3),
    /** The first retry's delay, doubled at each attempt. @default 30s */
    initialDelay: durationSchema.default('30s'),
    /** The cap of the delay. @default 10m */
    maxDelay: durationSchema.default('10m'),
  })
  .strict();

/** The scheduling fields of a job's `options` (merged into the job schema). */
export const scheduleOptionFields = {
  schedule: scheduleSchema.optional(),
  /** What a slot that comes while a run goes does: `buffer-one` runs once right after it, `skip` drops it. @default 'buffer-one' */
  overlap: z.enum(['skip', 'buffer-one']).optional(),
  /** After downtime: `once` runs one catch-up run for the missed slots, `skip` waits for the next slot. @default 'once' */
  catchUp: z.enum(['skip', 'once']).optional(),
  retry: retrySchema.optional(),
  /** What the daemon does with a run of the job left unfinished (a crash): `resume` it or `rollback` its writes. @default 'resume' */
  unfinished: z.enum(['resume', 'rollback']).optional(),
  /**
   * Maintenance windows: transfers run only while one is open; a run that reaches a window's end is
   * stopped at a checkpoint and resumed when one opens again. `[]`: no windows, whatever the
   * daemon's default. @default the daemon's `windows` (none: always open)
   */
  windows: z.array(windowSchema).optional(),
  /** The recovery point objective: the newest complete restore point should be at most this old. */
  rpo: durationSchema.optional(),
  /** Achieved RPO above this is `warning`. @default rpo */
  rpoWarn: durationSchema.optional(),
  /** Achieved RPO above this is `critical`. @default 2 × rpo */
  rpoCritical: durationSchema.optional(),
};

/** A parsed `options.schedule`. */
export type ScheduleOption = z.output<typeof scheduleSchema>;
/** A parsed maintenance window (`options.windows[i]`), its duration as written. */
export type WindowOption = z.output<typeof windowSchema>;
/** A parsed `options.retry`, durations as written. */
export type RetryInput = z.output<typeof retrySchema>;

/** The retry policy in milliseconds. */
export interface RetryOptions {
  attempts: number;
  initialDelay: number;
  maxDelay: number;
}

function safeDuration(value: number | string): number {
  try {
    return parseDuration(value);
  } catch {
    return Number.NaN;
  }
}

/** A job's scheduling policies with their defaults applied. */
export interface SchedulePolicies {
  overlap: 'skip' | 'buffer-one';
  catchUp: 'skip' | 'once';
  retry: RetryOptions;
  unfinished: 'resume' | 'rollback';
}

/** The policies of a job's options, defaults applied (the one place they are). */
export function schedulePolicies(options: {
  overlap?: 'skip' | 'buffer-one' | undefined;
  catchUp?: 'skip' | 'once' | undefined;
  retry?: RetryInput | undefined;
  unfinished?: 'resume' | 'rollback' | undefined;
}): SchedulePolicies {
  const retry = options.retry ?? retrySchema.parse({});
  return {
    overlap: options.overlap ?? 'buffer-one',
    catchUp: options.catchUp ?? 'once',
    unfinished: options.unfinished ?? 'resume',
    retry: {
      attempts: retry.attempts,
      initialDelay: parseDuration(retry.initialDelay, 'retry.initialDelay'),
      maxDelay: parseDuration(retry.maxDelay, 'retry.maxDelay'),
    },
  };
}
