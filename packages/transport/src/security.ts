import { createHash, X509Certificate } from 'node:crypto';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { AbortError, AuthError, InputError, type ReplikitError, TransportError } from '@replikit/core';
import { encodeMessage } from './protocol/messages.js';

/** Tells the peer why it is refused (an `error` frame), then closes the socket. */
function refuseSocket(socket: tls.TLSSocket, error: ReplikitError): void {
  try {
    for (const chunk of encodeMessage({ type: 'error', code: error.code, message: error.message, retry: false })) {
      socket.write(chunk);
    }
  } catch {
    // Already gone.
  }
  socket.end();
  setTimeout(() => socket.destroy(), 500).unref();
}

/** TLS with a pre-shared key (TLS-PSK): both ends hold the same secret; no certificates. */
export interface PskCredentials {
  /** The identity the dialer presents (the listener looks the key up by it). */
  identity: string;
  /** The secret, at least 16 bytes (32 random bytes recommended). */
  key: Uint8Array;
}

/** TLS with certificates on both ends, each end trusting only pinned peer certificates. */
export interface CertificateCredentials {
  /** This end's certificate, PEM. */
  cert: string | Uint8Array;
  /** This end's private key, PEM. */
  key: string | Uint8Array;
  /**
   * SHA-256 fingerprints of the peer certificates this end accepts (hex, with or without
   * colons; see {@link certificateFingerprint}). Anything else is refused.
   */
  trust: readonly string[];
}

/**
 * How a connection is secured.
 *
 * - `tls` with `psk` or `certificate`: encrypted, both ends authenticated. Use this across
 *   sites.
 * - `tcp`: plain TCP for a trusted network. With a `key`, both ends prove they hold it (an HMAC
 *   challenge in `hello`), but the data is neither encrypted nor protected beyond the block
 *   digests.
 */
export type Security =
  | { kind: 'tcp'; key?: Uint8Array }
  | { kind: 'tls'; psk: PskCredentials; certificate?: never }
  | { kind: 'tls'; certificate: CertificateCredentials; psk?: never };

/** TLS 1.3 suites first (AES-GCM is hardware-accelerated), then TLS 1.2 PSK suites. */
const CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'PSK-AES128-GCM-SHA256',
  'PSK-AES256-GCM-SHA384',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
].join(':');

/** A network address on which an agent listens or to which a side dials. */
export interface Address {
  host: string;
  port: number;
}

/** Normalises a fingerprint to lowercase hex without separators. */
export function normalizeFingerprint(fingerprint: string): string {
  return fingerprint.replace(/[^0-9a-fA-F]/g, '').toLowerCase();
}

/** The SHA-256 fingerprint (lowercase hex) of a PEM certificate, as {@link CertificateCredentials.trust} wants it. */
export function certificateFingerprint(pem: string | Uint8Array): string {
  const cert = new X509Certificate(typeof pem === 'string' ? pem : Buffer.from(pem));
  return createHash('sha256').update(cert.raw).digest('hex');
}

/** Checks a {@link Security} value; throws {@link @replikit/core!InputError} on a mistake. */
export function checkSecurity(security: Security): void {
  if (security.kind === 'tcp') {
    if (security.key && security.key.length < 16) throw new InputError('a transport key must have at least 16 bytes');
    return;
  }
  if (security.kind !== 'tls')
    throw new InputError(`unknown transport security '${(security as { kind: string }).kind}'`);
  if (security.psk && security.certificate) throw new InputError('give TLS either a pre-shared key or a certificate');
  if (security.psk) {
    if (security.psk.key.length < 16) throw new InputError('a TLS pre-shared key must have at least 16 bytes');
    if (!security.psk.identity) throw new InputError('a TLS pre-shared key needs an identity');
    return;
  }
  if (!security.certificate) throw new InputError('TLS needs a pre-shared key or a certificate');
  if (security.certificate.trust.length === 0) {
    throw new InputError('TLS with certificates needs at least one trusted peer fingerprint');
  }
}

function tlsBase(security: Extract<Security, { kind: 'tls' }>): tls.SecureContextOptions & tls.CommonConnectionOptions {
  if (security.psk) return { ciphers: CIPHERS, minVersion: 'TLSv1.2' };
  const certificate = security.certificate!;
  return {
    cert: typeof certificate.cert === 'string' ? certificate.cert : Buffer.from(certificate.cert),
    key: typeof certificate.key === 'string' ? certificate.key : Buffer.from(certificate.key),
    minVersion: 'TLSv1.2',
  };
}

/** Checks the peer certificate of a TLS socket against the pinned fingerprints. */
function checkPinned(socket: tls.TLSSocket, trust: readonly string[], peer: string): ReplikitError | undefined {
  const cert = socket.getPeerX509Certificate();
  if (!cert) return new AuthError(`${peer} presented no certificate; it must present a pinned one`);
  const fingerprint = createHash('sha256').update(cert.raw).digest('hex');
  if (!trust.map(normalizeFingerprint).includes(fingerprint)) {
    return new AuthError(
      `${peer} presented certificate ${fingerprint.slice(0, 16)}…, which is not pinned; add its fingerprint to the trusted list if it is legitimate`,
      { details: { fingerprint } },
    );
  }
  return undefined;
}

/** Describes a failed TLS handshake for the side that saw it. */
export function tlsFailure(error: NodeJS.ErrnoException, peer: string): ReplikitError {
  const code = error.code ?? '';
  const auth = /SSL|TLS|ALERT|CERT|PSK|BINDER/i.test(code) || /alert|handshake|certificate|psk/i.test(error.message);
  if (auth) {
    return new AuthError(
      `TLS handshake with ${peer} failed (${code || error.message}): the two ends do not share a key or trust each other's certificate`,
      { cause: error, details: { errno: code } },
    );
  }
  return new TransportError(`TLS handshake with ${peer} failed: ${code} ${error.message}`.trim(), {
    cause: error,
    details: { errno: code },
  });
}

/**
 * Connects to `address` and completes the TLS handshake (and certificate pin check) when
 * `security` asks for TLS. Resolves with a stream ready for frames.
 */
export function dial(address: Address, security: Security, options: { signal?: AbortSignal } = {}): Promise<Duplex> {
  checkSecurity(security);
  const peer = `${address.host}:${address.port}`;
  return new Promise<Duplex>((resolve, reject) => {
    const { signal } = options;
    if (signal?.aborted) {
      reject(new AbortError('the connection was cancelled'));
      return;
    }
    let socket: net.Socket | tls.TLSSocket;
    const onAbort = () => {
      socket.destroy();
      reject(new AbortError('the connection was cancelled'));
    };
    const done = () => signal?.removeEventListener('abort', onAbort);
    if (security.kind === 'tcp') {
      socket = net.connect({ host: address.host, port: address.port, noDelay: true });
      socket.once('connect', () => {
        done();
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (error: NodeJS.ErrnoException) => {
        done();
        reject(
          new TransportError(`cannot connect to ${peer}: ${error.code ?? error.message}`, {
            cause: error,
            details: { errno: error.code },
          }),
        );
      });
    } else {
      const psk = security.psk;
      socket = tls.connect({
        host: address.host,
        port: address.port,
        ...tlsBase(security),
        ...(psk
          ? { pskCallback: () => ({ psk: Buffer.from(psk.key), identity: psk.identity }) }
          : { rejectUnauthorized: false }),
        checkServerIdentity: () => undefined,
      });
      socket.setNoDelay(true);
      const tlsSocket = socket as tls.TLSSocket;
      let secured = false;
      tlsSocket.once('secureConnect', () => {
        done();
        secured = true;
        if (security.certificate) {
          const refused = checkPinned(tlsSocket, security.certificate.trust, `agent ${peer}`);
          if (refused) {
            refuseSocket(tlsSocket, refused);
            reject(refused);
            return;
          }
        }
        tlsSocket.removeAllListeners('error');
        resolve(tlsSocket);
      });
      tlsSocket.once('error', (error: NodeJS.ErrnoException) => {
        done();
        if (secured) return;
        if (error.code === 'ECONNREFUSED') {
          reject(
            new TransportError(`cannot connect to ${peer}: ECONNREFUSED`, {
              cause: error,
              details: { errno: error.code },
            }),
          );
          return;
        }
        reject(tlsFailure(error, peer));
      });
      tlsSocket.once('close', () => {
        done();
        if (!secured) reject(new AuthError(`${peer} closed the connection during the TLS handshake`));
      });
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Callbacks of {@link createSecureServer}. */
export interface ListenHandlers {
  /** A connection passed the transport's checks (TLS and pinning); frames may flow. */
  onConnection(socket: Duplex, peer: string): void;
  /** A connection was refused before any frame (bad TLS handshake, unpinned certificate). */
  onRefused(error: ReplikitError, peer: string): void;
  /**
   * A connection ended during the TLS handshake without a refusal: the client left, or this side
   * dropped it (a deadline, a cap). Its `peer` may be `?:?` when the socket was already gone.
   * @default a refusal
   */
  onAbandoned?(peer: string, error: NodeJS.ErrnoException): void;
}

/** Errors of a TLS handshake that ended because the connection went away, not because of its content. */
const ABANDONED = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_TLS_HANDSHAKE_TIMEOUT', 'ETIMEDOUT']);

/** Creates a server for `security`; call `listen` on it. */
export function createSecureServer(security: Security, handlers: ListenHandlers): net.Server {
  checkSecurity(security);
  const peerOf = (socket: net.Socket) => `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
  if (security.kind === 'tcp') {
    return net.createServer({ noDelay: true }, (socket) => handlers.onConnection(socket, peerOf(socket)));
  }
  const psk = security.psk;
  const server = tls.createServer({
    ...tlsBase(security),
    ...(psk
      ? {
          pskIdentityHint: 'replikit',
          pskCallback: (_socket: tls.TLSSocket, identity: string) =>
            identity === psk.identity ? Buffer.from(psk.key) : null,
        }
      : { requestCert: true, rejectUnauthorized: false }),
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    socket.setNoDelay(true);
    const peer = peerOf(socket);
    if (security.certificate) {
      const refused = checkPinned(socket, security.certificate.trust, `client ${peer}`);
      if (refused) {
        handlers.onRefused(refused, peer);
        refuseSocket(socket, refused);
        return;
      }
    }
    handlers.onConnection(socket, peer);
  });
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    const peer = peerOf(socket);
    if (handlers.onAbandoned && (ABANDONED.has(error.code ?? '') || socket.remoteAddress === undefined)) {
      handlers.onAbandoned(peer, error);
      return;
    }
    const plain = /WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|record layer/i.test(
      `${error.code} ${error.message}`,
    );
    handlers.onRefused(
      plain
        ? new AuthError(`${peer} did not start a TLS handshake (a plain TCP client?); refused`, {
            cause: error,
            details: { errno: error.code },
          })
        : tlsFailure(error, `client ${peer}`),
      peer,
    );
  });
  return server;
}
