import { type Context, context, type Span, SpanStatusCode, trace } from '@opentelemetry/api';
import { isReplikitError } from '../errors.js';
import type { DiskRecord } from './run-record.js';
import { isRunStopped } from './run-stop.js';

/** How a disk's transfer ended, as its span's `replikit.disk.outcome` says. */
export type DiskOutcome = 'completed' | 'failed' | 'stopped' | 'cancelled';

function outcomeOf(error: unknown): DiskOutcome {
  if (error === undefined) return 'completed';
  if (isRunStopped(error)) return 'stopped';
  return isReplikitError(error) && error.code === 'E_ABORTED' ? 'cancelled' : 'failed';
}

/** The span of one disk's transfer; {@link DiskSpan.end} records its counters and outcome. */
export interface DiskSpan {
  /** Ends the span: `error` absent means the disk completed. Safe to call once only. */
  end(error?: unknown): void;
}

/**
 * Starts the span `replikit.disk` of one disk's transfer on the `@replikit/core` tracer, a child of
 * `parent` (the run's trace context). Through the OpenTelemetry API only: without an SDK
 * registered by the application it costs nothing. Attributes at the start: run id, job, disk
 * position, source and replica disk ids, mode and size in bytes; at the end: bytes read, sent and
 * written, blocks changed, zeroed and scanned, and the outcome. Counters are the disk's totals for
 * the run (a resumed run's span includes what the run sent before the resume). The outcome is
 * `completed`, `stopped` (parked at a checkpoint, to be resumed), `cancelled` (`E_ABORTED`) or
 * `failed`; a failure sets the span's status to error with the error's code, and records the
 * exception.
 */
export function startDiskSpan(
  run: { runId: string; job: string },
  disk: DiskRecord,
  parent: Context = context.active(),
): DiskSpan {
  const span: Span = trace.getTracer('@replikit/core').startSpan(
    'replikit.disk',
    {
      attributes: {
        'replikit.run_id': run.runId,
        'replikit.job': run.job,
        'replikit.disk.position': disk.position,
        'replikit.disk.id': disk.sourceDiskId,
        'replikit.disk.replica_id': disk.replicaDiskId,
        'replikit.disk.mode': disk.mode,
        'replikit.disk.size_bytes': disk.size,
      },
    },
    parent,
  );
  return {
    end(error?: unknown) {
      const stats = disk.stats;
      const outcome = outcomeOf(error);
      span.setAttributes({
        'replikit.disk.read_bytes': stats.bytesRead,
        'replikit.disk.sent_bytes': stats.bytesSent,
        'replikit.disk.written_bytes': stats.bytesWritten,
        'replikit.disk.blocks_changed': stats.blocksChanged,
        'replikit.disk.blocks_zero': stats.blocksZero,
        'replikit.disk.blocks_scanned': stats.blocksScanned,
        'replikit.disk.outcome': outcome,
      });
      if (outcome === 'failed') {
        const code = isReplikitError(error) ? error.code : 'E_INTERNAL';
        const message = error instanceof Error ? error.message : String(error);
        if (error instanceof Error) span.recordException(error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: `${code}: ${message}` });
      }
      span.end();
    },
  };
}
