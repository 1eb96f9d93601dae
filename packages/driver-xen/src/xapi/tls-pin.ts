import { isIP } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { AuthError, TransportError } from '@replikit/core';

/** `AB:CD:…` upper-case, whatever the user wrote. */
export function normaliseFingerprint(fingerprint: string): string {
  const hex = fingerprint.replace(/:/g, '').toUpperCase();
  return hex.match(/../g)!.join(':');
}

/** Where a pinned TLS connection goes. */
export interface PinnedEndpoint {
  host: string;
  port: number;
  /** The SHA-256 fingerprint the server certificate must have (any spelling). */
  fingerprint: string;
}

/**
 * Opens a TLS connection that is handed over only once the server certificate has the pinned
 * fingerprint: nothing is written on it before that check, so a server with another certificate
 * never sees a request, a session id or a password. (The chain is not verified: the pin replaces
 * it, which is what a pool's self-signed certificate needs.)
 *
 * @throws {@link @replikit/core!AuthError} when the certificate is another one; {@link @replikit/core!TransportError} when the
 * host cannot be reached.
 */
export function connectPinned(endpoint: PinnedEndpoint): Promise<TLSSocket> {
  const { host, port } = endpoint;
  const want = normaliseFingerprint(endpoint.fingerprint);
  return new Promise<TLSSocket>((resolve, reject) => {
    // SNI names a host, never an address (Node warns, RFC 6066 forbids it).
    const servername = isIP(host) === 0 ? host : undefined;
    const socket = connect({ host, port, rejectUnauthorized: false, ...(servername ? { servername } : {}) });
    const onError = (error: Error) => {
      socket.destroy();
      reject(
        new TransportError(`cannot reach ${host}:${port} to check its TLS certificate: ${error.message}`, {
          cause: error,
        }),
      );
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      const got = (socket.getPeerCertificate().fingerprint256 ?? '').toUpperCase();
      if (got === want) {
        resolve(socket);
        return;
      }
      socket.destroy();
      reject(
        new AuthError(
          `the TLS certificate of ${host}:${port} has fingerprint ${got}, not the pinned ${want}; check the job's fingerprint`,
          { details: { host, port, expected: want, actual: got } },
        ),
      );
    });
  });
}

/**
 * Connects to `host:port`, checks the server certificate against the pin and closes: the early,
 * one-line answer to a wrong fingerprint. Every later connection is pinned on its own too
 * ({@link connectPinned}).
 *
 * @throws as {@link connectPinned}.
 */
export async function checkPinnedCertificate(host: string, port: number, expected: string): Promise<void> {
  (await connectPinned({ host, port, fingerprint: expected })).destroy();
}

/** What undici's `connect` option and `http.request`'s `createConnection` call back with. */
type ConnectCallback = (error: Error | null, socket: TLSSocket | null) => void;

/**
 * A connector for undici's `Agent` (`connect`) and for `http(s).request` (`createConnection`)
 * that opens every connection with {@link connectPinned}.
 */
export function pinnedConnector(
  fingerprint: string,
): (
  options: { hostname?: string | null; host?: string | null; port?: string | number | null },
  callback: ConnectCallback,
) => undefined {
  return (options, callback) => {
    const host = options.hostname ?? options.host ?? '';
    const port = Number(options.port) || 443;
    connectPinned({ host: host.replace(/^\[(.*)\]$/, '$1'), port, fingerprint }).then(
      (socket) => callback(null, socket),
      (error: Error) => callback(error, null),
    );
    return undefined;
  };
}
