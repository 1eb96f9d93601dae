import { isIP } from 'node:net';
import { connect } from 'node:tls';
import { AuthError, TransportError } from '@replikit/core';

/** `AB:CD:…` upper-case, whatever the user wrote. */
export function normaliseFingerprint(fingerprint: string): string {
  const hex = fingerprint.replace(/:/g, '').toUpperCase();
  return hex.match(/../g)!.join(':');
}

/**
 * Connects to `host:port` with TLS, reads the server certificate's SHA-256 fingerprint and
 * compares it with `expected`. The XAPI client connects only after this check passed.
 *
 * @throws {@link @replikit/core!AuthError} when the certificate is another one; {@link @replikit/core!TransportError} when the
 * host cannot be reached.
 */
export async function checkPinnedCertificate(host: string, port: number, expected: string): Promise<void> {
  const want = normaliseFingerprint(expected);
  const got = await new Promise<string>((resolve, reject) => {
    // SNI names a host, never an address (Node warns, RFC 6066 forbids it).
    const servername = isIP(host) === 0 ? host : undefined;
    const socket = connect({ host, port, rejectUnauthorized: false, ...(servername ? { servername } : {}) });
    socket.once('secureConnect', () => {
      const fp = socket.getPeerCertificate().fingerprint256 ?? '';
      socket.destroy();
      resolve(fp.toUpperCase());
    });
    socket.once('error', (error) => {
      socket.destroy();
      reject(
        new TransportError(`cannot reach ${host}:${port} to check its TLS certificate: ${error.message}`, {
          cause: error,
        }),
      );
    });
  });
  if (got !== want) {
    throw new AuthError(
      `the TLS certificate of ${host}:${port} has fingerprint ${got}, not the pinned ${want}; check the job's fingerprint`,
      { details: { host, port, expected: want, actual: got } },
    );
  }
}
