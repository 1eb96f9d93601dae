export { backoffDelay } from './backoff.js';
export { type Clock, FakeClock, systemClock } from './clock.js';
export { Daemon, type DaemonOptions, LOOP_RESTART_MS } from './daemon.js';
export type {
  DaemonControlEvent,
  DaemonErrorEvent,
  DaemonEvents,
  DaemonHeldEvent,
  DaemonRpoEvent,
  DaemonRunEndEvent,
  DaemonRunStartEvent,
  DaemonSlotMissedEvent,
  DaemonWindowEvent,
} from './daemon-events.js';
export { DaemonMetrics } from './daemon-metrics.js';
export { formatDuration, parseDuration } from './duration.js';
export { classifyError, ERROR_CLASSES, type ErrorClass } from './error-class.js';
export type { DaemonEngine, ScheduleStore } from './job-loop.js';
export { type JobStatus, jobStatusOf, readJobStatuses } from './job-status.js';
export { nextRpoChange, type RpoLevel, type RpoTargets, rpoLevel, rpoTargets } from './rpo.js';
export {
  type RetryInput,
  type RetryOptions,
  retrySchema,
  type ScheduleOption,
  type SchedulePolicies,
  schedulePolicies,
  scheduleSchema,
  type WindowOption,
  windowSchema,
} from './schedule-options.js';
export type { DueRun, JobActivity, LastOutcome, RunReason, ScheduleRequest, ScheduleState } from './schedule-state.js';
export { type SlotCalendar, slotCalendar } from './slot-calendar.js';
export { WindowCalendar, type WindowPosition } from './window-calendar.js';
