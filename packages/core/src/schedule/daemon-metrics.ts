import { type Meter, metrics } from '@opentelemetry/api';
import type { Daemon } from './daemon.js';
import type { DaemonRunEndEvent } from './daemon-events.js';
import { jobStatusOf } from './job-status.js';
import type { RpoLevel } from './rpo.js';

const LEVELS: Record<RpoLevel, number> = { unknown: -1, ok: 0, warning: 1, critical: 2 };

/** Totals the daemon counted since it started, per job. */
interface JobTotals {
  runs: Record<'completed' | 'failed' | 'cancelled' | 'stopped', number>;
  bytesSent: number;
  runSeconds: number;
}

/**
 * The daemon's metrics: kept by listening to its events, reported through the OpenTelemetry API
 * (whatever SDK the application installs; none is a dependency) and as Prometheus text
 * ({@link prometheusText}) for `replikit daemon --metrics-port`. Units are seconds and bytes.
 *
 * Metrics: `replikit_job_rpo_seconds` (achieved RPO), `replikit_job_rpo_target_seconds`,
 * `replikit_job_rpo_level` (-1 unknown, 0 ok, 1 warning, 2 critical), `replikit_job_rpo_debt_slots`,
 * `replikit_job_runs_total{outcome}`, `replikit_job_sent_bytes_total`, `replikit_job_run_seconds_total`.
 * (Each daemon run is also a span `replikit.run` on the `@replikit/core` tracer, with a `replikit.disk`
 * span per disk transfer under it: the daemon's job loop and the engine make them, see `startRunSpan`.)
 */
export class DaemonMetrics {
  private readonly totals = new Map<string, JobTotals>();

  /**
   * @param daemon - the daemon to observe.
   * @param now - the clock RPO ages are read at (the daemon's). @default Date.now
   * @param meter - where the OpenTelemetry instruments are made. @default the global meter provider's `@replikit/core` meter
   */
  constructor(
    private readonly daemon: Daemon,
    private readonly now: () => number = Date.now,
    meter: Meter = metrics.getMeter('@replikit/core'),
  ) {
    const runs = meter.createCounter('replikit.job.runs', { description: 'runs the daemon started, by outcome' });
    const bytes = meter.createCounter('replikit.job.sent', { unit: 'By', description: 'bytes the runs sent' });
    const seconds = meter.createHistogram('replikit.job.run.duration', { unit: 's', description: 'run durations' });
    daemon.on('run-end', (event) => {
      this.count(event);
      const attributes = { 'replikit.job': event.job, 'replikit.outcome': event.outcome };
      runs.add(1, attributes);
      bytes.add(event.bytesSent ?? 0, attributes);
      seconds.record(event.durationSeconds, attributes);
    });
    const rpo = meter.createObservableGauge('replikit.job.rpo', {
      unit: 's',
      description: 'achieved RPO: age of the newest complete restore point',
    });
    const level = meter.createObservableGauge('replikit.job.rpo.level', {
      description: '-1 unknown, 0 ok, 1 warning, 2 critical',
    });
    const debt = meter.createObservableGauge('replikit.job.rpo.debt', {
      description: 'slots since the last success that made no restore point',
    });
    meter.addBatchObservableCallback(
      (observer) => {
        for (const state of daemon.states()) {
          const status = jobStatusOf(state, this.now());
          const attributes = { 'replikit.job': status.job };
          if (status.achievedRpoSeconds !== undefined) observer.observe(rpo, status.achievedRpoSeconds, attributes);
          observer.observe(level, LEVELS[status.rpoLevel], attributes);
          observer.observe(debt, status.rpoDebtSlots, attributes);
        }
      },
      [rpo, level, debt],
    );
  }

  private count(event: DaemonRunEndEvent): void {
    let totals = this.totals.get(event.job);
    if (!totals) {
      totals = { runs: { completed: 0, failed: 0, cancelled: 0, stopped: 0 }, bytesSent: 0, runSeconds: 0 };
      this.totals.set(event.job, totals);
    }
    totals.runs[event.outcome]++;
    totals.bytesSent += event.bytesSent ?? 0;
    totals.runSeconds += event.durationSeconds;
  }

  /** The metrics in the Prometheus text exposition format (version 0.0.4). */
  prometheusText(): string {
    const now = this.now();
    const lines: string[] = [];
    const family = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[string, number]>) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`${name}{${labels}} ${value}`);
    };
    const label = (job: string) => `job="${job.replace(/[\\"]/g, '\\$&')}"`;
    const statuses = this.daemon.states().map((state) => jobStatusOf(state, now));
    family(
      'replikit_job_rpo_seconds',
      'gauge',
      'Achieved RPO: age of the newest complete restore point.',
      statuses.flatMap((s) =>
        s.achievedRpoSeconds === undefined ? [] : [[label(s.job), s.achievedRpoSeconds] as [string, number]],
      ),
    );
    family(
      'replikit_job_rpo_target_seconds',
      'gauge',
      'The RPO target.',
      statuses.flatMap((s) =>
        s.rpoTargetSeconds === undefined ? [] : [[label(s.job), s.rpoTargetSeconds] as [string, number]],
      ),
    );
    family(
      'replikit_job_rpo_level',
      'gauge',
      'RPO level: -1 unknown, 0 ok, 1 warning, 2 critical.',
      statuses.map((s) => [label(s.job), LEVELS[s.rpoLevel]]),
    );
    family(
      'replikit_job_rpo_debt_slots',
      'gauge',
      'Slots since the last success that made no restore point.',
      statuses.map((s) => [label(s.job), s.rpoDebtSlots]),
    );
    const totals = [...this.totals.entries()];
    family(
      'replikit_job_runs_total',
      'counter',
      'Runs the daemon ended, by outcome.',
      totals.flatMap(([job, t]) =>
        (['completed', 'failed', 'cancelled', 'stopped'] as const).map(
          (o) => [`${label(job)},outcome="${o}"`, t.runs[o]] as [string, number],
        ),
      ),
    );
    family(
      'replikit_job_sent_bytes_total',
      'counter',
      'Bytes the runs sent.',
      totals.map(([job, t]) => [label(job), t.bytesSent]),
    );
    family(
      'replikit_job_run_seconds_total',
      'counter',
      'Time spent in runs.',
      totals.map(([job, t]) => [label(job), t.runSeconds]),
    );
    return `${lines.join('\n')}\n`;
  }
}
