import type { JobOptions } from '../job/job-spec.js';
import { parseDuration } from './duration.js';

/** Where a job stands against its RPO: `ok`, `warning`, `critical`, or `unknown` (no restore point yet, or no RPO set). */
export type RpoLevel = 'ok' | 'warning' | 'critical' | 'unknown';

/** A job's RPO thresholds in milliseconds. */
export interface RpoTargets {
  /** The objective. */
  target: number;
  /** Above this the level is `warning` (default: the target). */
  warn: number;
  /** Above this the level is `critical` (default: twice the target). */
  critical: number;
}

/** The RPO thresholds of a job's options, or `undefined` when it sets no `rpo`. */
export function rpoTargets(options: Pick<JobOptions, 'rpo' | 'rpoWarn' | 'rpoCritical'>): RpoTargets | undefined {
  if (options.rpo === undefined) return undefined;
  const target = parseDuration(options.rpo, 'rpo');
  const warn = options.rpoWarn === undefined ? target : parseDuration(options.rpoWarn, 'rpoWarn');
  const critical = options.rpoCritical === undefined ? 2 * target : parseDuration(options.rpoCritical, 'rpoCritical');
  return { target, warn, critical: Math.max(critical, warn) };
}

/** The level of an achieved RPO (milliseconds; `undefined` before the first restore point). */
export function rpoLevel(achieved: number | undefined, targets: RpoTargets | undefined): RpoLevel {
  if (achieved === undefined || targets === undefined) return 'unknown';
  if (achieved > targets.critical) return 'critical';
  if (achieved > targets.warn) return 'warning';
  return 'ok';
}

/**
 * When the level of a job whose newest restore point is from `pointAt` next changes by time alone
 * (the first threshold not yet passed at `now`), or `undefined` when no threshold is left.
 */
export function nextRpoChange(
  pointAt: number | undefined,
  targets: RpoTargets | undefined,
  now: number,
): number | undefined {
  if (pointAt === undefined || targets === undefined) return undefined;
  for (const threshold of [targets.warn, targets.critical]) {
    // `achieved > threshold` first holds one millisecond after pointAt + threshold.
    const at = pointAt + threshold + 1;
    if (at > now) return at;
  }
  return undefined;
}
