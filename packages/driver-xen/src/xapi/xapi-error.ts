import { AbortError, AuthError, DriverError, isReplikitError, NotFoundError, type ReplikitError } from '@replikit/core';

/** The XAPI error codes a call is retried on: transient by nature. */
export const RETRYABLE_XAPI_CODES: ReadonlySet<string> = new Set(['TOO_MANY_PENDING_TASKS', 'VDI_IN_USE']);

/** Network error codes meaning the connection dropped (the call is retried on a new one). */
export const DROPPED_CONNECTION_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

/** Node's codes for a TLS certificate it does not trust (the pool's own is self-signed). */
const UNTRUSTED_CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * What failed below XAPI, if `error` is not an answer of XAPI: a system error of the socket
 * (`connect ECONNREFUSED …`, `getaddrinfo ENOTFOUND …`), or a certificate TLS refused. `xen-api`
 * passes these on as they are, with a code that looks like an XAPI code but no `params`.
 */
export function networkFailureOf(error: unknown): { code: string; message: string; certificate: boolean } | undefined {
  const e = error as { code?: unknown; params?: unknown; syscall?: unknown; message?: unknown } | null;
  if (typeof e?.code !== 'string' || Array.isArray(e.params)) return undefined;
  const certificate = UNTRUSTED_CERTIFICATE_CODES.has(e.code);
  if (!certificate && typeof e.syscall !== 'string') return undefined;
  return { code: e.code, message: String(e.message ?? e.code).replace(/[\r\n]+/g, ' '), certificate };
}

/** The XAPI code and parameters of an error thrown by `xen-api`, if it is one. */
export function xapiCodeOf(error: unknown): { code: string; params: string[] } | undefined {
  const e = error as { code?: unknown; params?: unknown } | null;
  if (typeof e?.code !== 'string' || !/^[A-Z][A-Z0-9_]*$/.test(e.code)) return undefined;
  const params = Array.isArray(e.params) ? e.params.map(String) : [];
  return { code: e.code, params };
}

/** True when `error` is a dropped or refused connection rather than an answer of XAPI. */
export function isDroppedConnection(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && DROPPED_CONNECTION_CODES.has(code)) return true;
  const cause = (error as { cause?: unknown } | null)?.cause;
  return cause !== undefined && cause !== error && isDroppedConnection(cause);
}

/**
 * Turns what a XAPI call threw into a {@link ReplikitError}: `E_ABORTED` when `signal` fired,
 * `E_AUTH` for a refused login or an untrusted certificate, `E_NOT_FOUND` for an unknown handle or
 * uuid, `E_DRIVER` saying the pool could not be reached for a socket error, else `E_DRIVER` —
 * always with the XAPI code and parameters (or the socket's code) in `details`. A
 * `ReplikitError` passes unchanged.
 */
export function wrapXapiError(error: unknown, what: string, signal?: AbortSignal): ReplikitError {
  if (isReplikitError(error)) return error;
  if (signal?.aborted) return new AbortError(`${what}: cancelled`, { cause: error });
  const network = networkFailureOf(error);
  if (network?.certificate) {
    return new AuthError(
      `${what}: the pool's TLS certificate is not trusted (${network.message}, ${network.code}); pin it with fingerprint, or set allowUnauthorized`,
      { cause: error, details: { networkCode: network.code } },
    );
  }
  if (network) {
    return new DriverError(
      `${what}: cannot reach the pool (${network.message}); check the url and that XAPI listens there`,
      {
        cause: error,
        details: { networkCode: network.code },
      },
    );
  }
  const xapi = xapiCodeOf(error);
  const details = xapi ? { xapiCode: xapi.code, xapiParams: xapi.params } : {};
  const reason = xapi ? `${xapi.code}(${xapi.params.join(', ')})` : String((error as Error)?.message ?? error);
  const line = reason.replace(/[\r\n]+/g, ' ');
  if (xapi?.code === 'SESSION_AUTHENTICATION_FAILED') {
    return new AuthError(`${what}: XAPI refused the login; check the user and the credentials the job names`, {
      cause: error,
      details,
    });
  }
  if (xapi?.code === 'HANDLE_INVALID' || xapi?.code === 'UUID_INVALID') {
    return new NotFoundError(`${what}: XAPI knows no such object (${line})`, { cause: error, details });
  }
  return new DriverError(`${what}: XAPI answered ${line}`, { cause: error, details });
}
