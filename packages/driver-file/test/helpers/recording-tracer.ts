import {
  type Attributes,
  type AttributeValue,
  type Context,
  context,
  type Exception,
  type Span,
  type SpanContext,
  type SpanOptions,
  type SpanStatus,
  SpanStatusCode,
  type TimeInput,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api';

/** One span as the recording tracer kept it. */
export interface RecordedSpan {
  name: string;
  /** The tracer's name (the library that made the span). */
  scope: string;
  spanId: string;
  traceId: string;
  /** The parent's span id, when the span had a parent. */
  parentSpanId?: string;
  attributes: Attributes;
  status: SpanStatus;
  exceptions: Exception[];
  ended: boolean;
}

let next = 1;
const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');

/**
 * A tracer provider for tests, through the OpenTelemetry API alone (no SDK is installed): every
 * span any tracer starts is kept, with its parent taken from the context it was started in.
 * `register()` makes it the global provider; `unregister()` removes it.
 */
export class RecordingTracerProvider implements TracerProvider {
  readonly spans: RecordedSpan[] = [];

  getTracer(scope: string): Tracer {
    const spans = this.spans;
    const startSpan = (name: string, options: SpanOptions = {}, parent: Context = context.active()): Span => {
      const parentContext = trace.getSpanContext(parent);
      const spanContext: SpanContext = {
        traceId: parentContext?.traceId ?? hex(next++, 32),
        spanId: hex(next++, 16),
        traceFlags: 1,
      };
      const recorded: RecordedSpan = {
        name,
        scope,
        spanId: spanContext.spanId,
        traceId: spanContext.traceId,
        ...(parentContext ? { parentSpanId: parentContext.spanId } : {}),
        attributes: { ...options.attributes },
        status: { code: SpanStatusCode.UNSET },
        exceptions: [],
        ended: false,
      };
      spans.push(recorded);
      const span: Span = {
        spanContext: () => spanContext,
        setAttribute(key: string, value: AttributeValue) {
          recorded.attributes[key] = value;
          return span;
        },
        setAttributes(attributes: Attributes) {
          Object.assign(recorded.attributes, attributes);
          return span;
        },
        addEvent: () => span,
        addLink: () => span,
        addLinks: () => span,
        setStatus(status: SpanStatus) {
          recorded.status = status;
          return span;
        },
        updateName(newName: string) {
          recorded.name = newName;
          return span;
        },
        end(_time?: TimeInput) {
          recorded.ended = true;
        },
        isRecording: () => !recorded.ended,
        recordException(exception: Exception) {
          recorded.exceptions.push(exception);
        },
      };
      return span;
    };
    return {
      startSpan,
      startActiveSpan: ((name: string, ...rest: unknown[]) => {
        const fn = rest.pop() as (span: Span) => unknown;
        const span = startSpan(name, rest[0] as SpanOptions | undefined, rest[1] as Context | undefined);
        return context.with(trace.setSpan(context.active(), span), () => fn(span));
      }) as Tracer['startActiveSpan'],
    };
  }

  /** Makes this the global tracer provider. */
  register(): this {
    trace.setGlobalTracerProvider(this);
    return this;
  }

  /** Removes the global tracer provider (the API's no-op one answers again). */
  unregister(): void {
    trace.disable();
  }
}
