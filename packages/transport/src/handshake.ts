import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthError, TransportError } from '@replikit/core';
import type { FrameConnection } from './connection.js';
import { PROTOCOL_VERSION } from './protocol/constants.js';
import type { HelloMessage, Role } from './protocol/messages.js';

/** The protocol name carried by `hello`. */
export const PROTOCOL_NAME = 'replikit-blocks';

/** What a completed handshake tells about the peer. */
export interface HandshakeResult {
  /** The protocol version both ends use. */
  version: number;
  /** The codecs the peer offers. */
  peerCodecs: string[];
  /** The protocol features the peer lists (`delta`: a target that applies delta blocks). */
  peerFeatures: string[];
}

/** Options of {@link handshake}. */
export interface HandshakeOptions {
  /** The role this end plays. */
  role: Role;
  /** True for the end that opened the connection (it speaks first). */
  dialer: boolean;
  /** The codecs this end offers. */
  codecs: string[];
  /** The protocol features this end supports. @default none */
  features?: string[];
  /** Shared key of a plain TCP connection: both ends prove they hold it. */
  key?: Uint8Array | undefined;
  /** Versions this end speaks. @default [1, 1] */
  versions?: [number, number];
}

function proof(key: Uint8Array, label: string, first: string, second: string): string {
  return createHmac('sha256', key).update(`${PROTOCOL_NAME}/${label}/${first}/${second}`).digest('hex');
}

function sameProof(a: string | undefined, b: string): boolean {
  if (a === undefined || a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

function checkPeer(hello: HelloMessage, options: HandshakeOptions, conn: FrameConnection): number {
  const [low, high] = options.versions ?? [PROTOCOL_VERSION, PROTOCOL_VERSION];
  if (hello.protocol !== PROTOCOL_NAME) {
    const error = new TransportError(`${conn.peer} speaks '${hello.protocol}', not ${PROTOCOL_NAME}`, {
      details: { protocol: true },
    });
    conn.abort(error);
    throw error;
  }
  const version = Math.min(high, hello.versions[1]);
  if (version < Math.max(low, hello.versions[0])) {
    const error = new TransportError(
      `protocol version mismatch: ${conn.peer} speaks versions ${hello.versions[0]}–${hello.versions[1]}, this side ${low}–${high}; upgrade the older end`,
      { details: { peerVersions: hello.versions, versions: [low, high], protocol: true } },
    );
    conn.abort(error);
    throw error;
  }
  if (hello.role === options.role) {
    const error = new TransportError(`both ends of the connection want to be the ${hello.role}`, {
      details: { protocol: true },
    });
    conn.abort(error);
    throw error;
  }
  return version;
}

function refuse(conn: FrameConnection, message: string): never {
  const error = new AuthError(message);
  conn.abort(error);
  throw error;
}

/**
 * The opening exchange: `hello` both ways (versions, role, codecs), then, on a plain TCP
 * connection with a shared key, a proof from each end (HMAC of both nonces). A mismatch ends
 * the connection with an `error` frame on both ends before any session frame.
 */
export async function handshake(conn: FrameConnection, options: HandshakeOptions): Promise<HandshakeResult> {
  const nonce = randomBytes(32).toString('hex');
  const [low, high] = options.versions ?? [PROTOCOL_VERSION, PROTOCOL_VERSION];
  const hello = (extra: Partial<HelloMessage> = {}): HelloMessage => ({
    type: 'hello',
    protocol: PROTOCOL_NAME,
    versions: [low, high],
    role: options.role,
    nonce,
    codecs: options.codecs,
    ...(options.features?.length ? { features: options.features } : {}),
    ...extra,
  });
  const key = options.key;
  if (options.dialer) {
    conn.send(hello());
    const theirs = await conn.expect('hello');
    const version = checkPeer(theirs, options, conn);
    if (key) {
      if (!sameProof(theirs.proof, proof(key, 'listener', nonce, theirs.nonce))) {
        refuse(conn, `${conn.peer} does not hold the transport key (wrong key, or an impostor); refused`);
      }
      conn.send({ type: 'auth', proof: proof(key, 'dialer', theirs.nonce, nonce) });
    } else if (theirs.proof !== undefined) {
      refuse(conn, `${conn.peer} expects a transport key; configure the same key on both ends`);
    }
    return { version, peerCodecs: theirs.codecs, peerFeatures: theirs.features ?? [] };
  }
  const theirs = await conn.expect('hello');
  const version = checkPeer(theirs, options, conn);
  conn.send(hello(key ? { proof: proof(key, 'listener', theirs.nonce, nonce) } : {}));
  if (key) {
    const auth = await conn.expect('auth');
    if (!sameProof(auth.proof, proof(key, 'dialer', nonce, theirs.nonce))) {
      refuse(conn, `${conn.peer} does not hold the transport key; refused`);
    }
  }
  return { version, peerCodecs: theirs.codecs, peerFeatures: theirs.features ?? [] };
}
