import { Cron } from 'croner';
import { parseDuration } from './duration.js';
import type { WindowOption } from './schedule-options.js';

/** Where a time stands against a job's maintenance windows (milliseconds since the epoch). */
export type WindowPosition =
  | {
      open: true /** When the open stretch ends; `undefined`: never (a window that never closes). */;
      closesAt?: number;
    }
  | { open: false /** When a window opens next; `undefined`: never again. */; opensAt?: number };

/** Bounds the walks over overlapping windows (a window longer than its period never closes). */
const MAX_STEPS = 10_000;

/**
 * The maintenance windows of a job: each opens at its cron's occurrences (in its time zone) and
 * stays open for its duration; transfers run only while one is open. Overlapping or touching
 * windows make one open stretch.
 */
export class WindowCalendar {
  private readonly windows: Array<{ cron: Cron; duration: number }>;

  constructor(windows: readonly WindowOption[]) {
    this.windows = windows.map((w, i) => ({
      cron: new Cron(w.cron, { paused: true, ...(w.timezone ? { timezone: w.timezone } : {}) }),
      duration: parseDuration(w.duration, `windows[${i}].duration`),
    }));
  }

  /** Where `time` stands: open (until when) or closed (until when). */
  at(time: number): WindowPosition {
    if (this.windows.length === 0) return { open: true };
    let closesAt = this.closeOf(time);
    if (closesAt === undefined) return { open: false, ...this.nextOpening(time) };
    // Another window open at the end of this one carries the stretch on.
    for (let step = 0; step < MAX_STEPS; step++) {
      const next = this.closeOf(closesAt);
      if (next === undefined || next <= closesAt) return { open: true, closesAt };
      closesAt = next;
    }
    return { open: true };
  }

  /** The latest end of the windows open at `time`, or `undefined` when none is. */
  private closeOf(time: number): number | undefined {
    let end: number | undefined;
    for (const { cron, duration } of this.windows) {
      // The first opening after `time - duration` is open at `time` when it is not after it.
      let opening = cron.nextRun(new Date(time - duration))?.getTime();
      for (let step = 0; opening !== undefined && opening <= time && step < MAX_STEPS; step++) {
        end = Math.max(end ?? 0, opening + duration);
        opening = cron.nextRun(new Date(opening))?.getTime();
      }
    }
    return end;
  }

  private nextOpening(time: number): { opensAt?: number } {
    let first: number | undefined;
    for (const { cron } of this.windows) {
      const opening = cron.nextRun(new Date(time))?.getTime();
      if (opening !== undefined && (first === undefined || opening < first)) first = opening;
    }
    return first === undefined ? {} : { opensAt: first };
  }
}
