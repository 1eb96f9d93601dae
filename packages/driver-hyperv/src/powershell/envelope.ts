import { DriverError } from '@replikit/core';

/** What a call's script prints: its output, or the PowerShell error it caught. */
type Envelope = { ok: true; data: unknown } | { ok: false; category?: string; message?: string; errorId?: string };

/**
 * The `data` array of a call's envelope, or a {@link DriverError} carrying the PowerShell error's
 * category and message (in `details`: `category`, `errorId`, `script`).
 */
export function unwrapEnvelope(script: string, raw: string): unknown[] {
  let envelope: Envelope;
  try {
    envelope = JSON.parse(raw) as Envelope;
  } catch {
    throw new DriverError(
      `PowerShell script ${script} printed something that is not its JSON envelope: ${raw.slice(0, 200)}`,
      {
        details: { script },
      },
    );
  }
  if (envelope.ok === true) {
    const data = envelope.data;
    if (data === null || data === undefined) return [];
    return Array.isArray(data) ? data : [data];
  }
  const category = envelope.category ?? 'NotSpecified';
  throw new DriverError(`PowerShell script ${script} failed (${category}): ${envelope.message ?? 'no message'}`, {
    details: { script, category, errorId: envelope.errorId ?? '' },
  });
}
