import type { EventEmitter } from 'eventemitter3';
import type { EngineEvents } from './events.js';
import type { RunJournal } from './run-journal.js';
import { addStats, emptyStats } from './run-record.js';

/** Emits a run's progress events at most every `intervalMs`, with absolute counters. */
export class ProgressReporter {
  private startedAt = 0;
  private lastEmit = 0;
  private scannedAtStart = 0;
  private sentAtStart = 0;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;

  constructor(
    private readonly record: RunJournal,
    private readonly events: EventEmitter<EngineEvents>,
    private readonly intervalMs = 100,
  ) {}

  /** Starts the clock of rates and ETA. */
  start(): void {
    const totals = this.totals();
    this.startedAt = performance.now();
    this.scannedAtStart = totals.bytesScanned;
    this.sentAtStart = totals.bytesSent;
    this.timer = setInterval(() => {
      if (this.dirty) this.emit();
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Notes that counters changed; an event follows within the interval. */
  changed(): void {
    this.dirty = true;
    if (performance.now() - this.lastEmit >= this.intervalMs) this.emit();
  }

  private totals() {
    const total = emptyStats();
    for (const disk of this.record.disks) addStats(total, disk.stats);
    return total;
  }

  /** Emits an event now (when `force`, even without a listener-visible change). */
  emit(force = false): void {
    if (!force && !this.dirty) return;
    this.dirty = false;
    this.lastEmit = performance.now();
    if (this.events.listenerCount('progress') === 0) return;
    const stats = this.totals();
    const elapsedMs = this.startedAt ? this.lastEmit - this.startedAt : 0;
    const seconds = elapsedMs / 1000;
    const scanRate = seconds > 0 ? (stats.bytesScanned - this.scannedAtStart) / seconds : 0;
    const sendRate = seconds > 0 ? (stats.bytesSent - this.sentAtStart) / seconds : 0;
    const left = stats.bytesTotal - stats.bytesScanned;
    this.events.emit('progress', {
      runId: this.record.runId,
      job: this.record.job.name,
      state: this.record.state,
      stats,
      disks: this.record.disks.map((disk) => ({
        id: disk.sourceDiskId,
        mode: disk.mode,
        done: disk.done,
        stats: { ...disk.stats },
      })),
      elapsedMs,
      scanRate,
      sendRate,
      ...(scanRate > 0 && left >= 0 ? { etaSeconds: left / scanRate } : {}),
    });
  }
}
