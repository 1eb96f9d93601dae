import { type Context, context, SpanStatusCode, trace } from '@opentelemetry/api';
import type { DaemonRunEndEvent, DaemonRunStartEvent } from './daemon-events.js';

/** The span `replikit.run` of one daemon run, and the context its disk spans are made in. */
export interface RunSpan {
  /** The context whose active span is the run span: the engine's `traceContext`. */
  readonly context: Context;
  /** Ends the span as the run ended: its run id, and an error status unless it completed or was stopped. */
  end(event: Pick<DaemonRunEndEvent, 'runId' | 'outcome' | 'code'>): void;
}

/**
 * Starts the span `replikit.run` of a daemon run on the `@replikit/core` tracer (attributes
 * `replikit.job`, `replikit.reason`; `replikit.run_id` at its end). The engine makes one
 * `replikit.disk` span per disk transfer under it. Through the OpenTelemetry API only.
 */
export function startRunSpan(event: Pick<DaemonRunStartEvent, 'job' | 'reason'>): RunSpan {
  const span = trace.getTracer('@replikit/core').startSpan('replikit.run', {
    attributes: { 'replikit.job': event.job, 'replikit.reason': event.reason },
  });
  return {
    context: trace.setSpan(context.active(), span),
    end({ runId, outcome, code }) {
      if (runId) span.setAttribute('replikit.run_id', runId);
      span.setAttribute('replikit.outcome', outcome);
      if (outcome !== 'completed' && outcome !== 'stopped')
        span.setStatus({ code: SpanStatusCode.ERROR, message: code ?? outcome });
      span.end();
    },
  };
}
