import { Cron } from 'croner';
import { parseDuration } from './duration.js';
import type { ScheduleOption } from './schedule-options.js';

/** At most this many slots are counted between two times (a cron of every second, down for a day, is 86 400). */
export const MAX_COUNTED_SLOTS = 1_000_000;

/** The slots (due times) of a job's schedule. Times are milliseconds since the epoch. */
export interface SlotCalendar {
  /** The first slot strictly after `after`, or `undefined` when the schedule has no more. */
  next(after: number): number | undefined;
  /** How many slots fall in `(after, until]`, and the latest of them. */
  between(after: number, until: number): { count: number; latest?: number };
}

class IntervalCalendar implements SlotCalendar {
  constructor(private readonly every: number) {}

  next(after: number): number {
    return (Math.floor(after / this.every) + 1) * this.every;
  }

  between(after: number, until: number): { count: number; latest?: number } {
    const first = Math.floor(after / this.every) + 1;
    const last = Math.floor(until / this.every);
    return last < first ? { count: 0 } : { count: last - first + 1, latest: last * this.every };
  }
}

class CronCalendar implements SlotCalendar {
  private readonly cron: Cron;

  constructor(expression: string, timezone: string | undefined) {
    this.cron = new Cron(expression, { paused: true, ...(timezone ? { timezone } : {}) });
  }

  next(after: number): number | undefined {
    return this.cron.nextRun(new Date(after))?.getTime();
  }

  between(after: number, until: number): { count: number; latest?: number } {
    let count = 0;
    let latest: number | undefined;
    for (let slot = this.next(after); slot !== undefined && slot <= until; slot = this.next(slot)) {
      count++;
      latest = slot;
      if (count >= MAX_COUNTED_SLOTS) {
        // Counting stops here; the latest slot is still the right one for the decision.
        const end = this.cron.previousRuns(1, new Date(until + 1))[0]?.getTime();
        return { count, latest: end ?? latest };
      }
    }
    return latest === undefined ? { count } : { count, latest };
  }
}

/** The calendar of a parsed `options.schedule`. */
export function slotCalendar(schedule: ScheduleOption): SlotCalendar {
  if (typeof schedule === 'string') return new CronCalendar(schedule, undefined);
  if ('every' in schedule) return new IntervalCalendar(parseDuration(schedule.every, 'schedule.every'));
  return new CronCalendar(schedule.cron, schedule.timezone);
}
