import { ReplikitError, TransportError } from '@replikit/core';

/**
 * The peer broke the protocol: a malformed or oversized frame, an unknown type, a frame out of
 * place. A session that sees one ends (it is never retried) and writes nothing from that frame.
 */
export class ProtocolError extends TransportError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(`protocol error: ${message}`, { details: { ...details, protocol: true } });
  }
}

/** True when `error` is a {@link ProtocolError} (or was one, reported by the peer). */
export function isProtocolError(error: unknown): boolean {
  return error instanceof ReplikitError && error.details.protocol === true;
}

/**
 * A frame whose check failed: the link corrupted it (a bit flip on plain TCP). Unlike other
 * protocol errors it is worth a reconnect: the sender resends the frame.
 */
export class DamagedFrameError extends ProtocolError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(message, { ...details, damaged: true });
  }
}

/** True when `error` reports a frame damaged in transit. */
export function isDamaged(error: unknown): boolean {
  return error instanceof ReplikitError && error.details.damaged === true;
}
