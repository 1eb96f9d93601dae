import { type BlockHasher, DriverError, type Hypervisor, isReplikitError, type ReplikitError } from '@replikit/core';
import type { FrameConnection } from './connection.js';
import { HOST_FILE_OPS, HostFileSession } from './host-file-ops.js';
import type { HostFileRoot } from './host-files.js';
import type { RequestMessage } from './protocol/messages.js';
import { isProtocolError, ProtocolError } from './protocol/protocol-error.js';
import { runPullDisk } from './pull-disk-op.js';
import { createRemoteTarget } from './remote-target-link.js';
import { SOURCE_OPS, SourceReads } from './source-read-ops.js';
import { TARGET_OPS } from './target-control-ops.js';

/** What {@link serveTargetControl} reports when its connection ends. */
export interface TargetControlResult {
  /** Requests answered (with a result or an error). */
  requests: number;
  /** Why the connection ended, when it was not the source closing it. */
  error?: ReplikitError;
}

/** How `pullDisk` reaches the source agent it names: TLS-PSK, a few quick reconnects. */
function dialSource(address: { host: string; port: number }, psk: { identity: string; key: Uint8Array }) {
  return createRemoteTarget({
    kind: 'source',
    address,
    security: { kind: 'tls', psk },
    reconnect: { attempts: 3, initialDelayMs: 50, maxDelayMs: 500 },
  });
}

/** A driver failure as the `error` member of a response: its code, or `E_DRIVER` for a foreign error. */
function errorOf(error: unknown): { code: ReplikitError['code']; message: string } {
  if (isReplikitError(error)) return { code: error.code, message: error.message };
  return new DriverError(`the agent's driver failed: ${(error as Error)?.message ?? String(error)}`);
}

/**
 * Serves a target-control connection on the agent (the source sent `request` as its first frame
 * after the handshake): runs each request on the agent's driver, one at a time in arrival order,
 * and answers it with its id. A driver error is answered, and the connection goes on; a malformed
 * request (unknown members are ignored, a missing or mistyped argument is not) ends it with a
 * protocol error, and nothing of it reaches the driver. With `serveReads` (the `source` feature)
 * it also answers the reads and digests of the driver's disks (`readDisk`, `readDigests`);
 * `hasherFor` (the agent's block hasher) widens the digests `readDigests` computes. With
 * `hostFiles` (the `host-files` feature) it answers the image and state-file requests of a
 * remoting `hyperv` driver, confined to that root.
 */
export async function serveTargetControl(
  conn: FrameConnection,
  target: Hypervisor,
  first: RequestMessage,
  stopping?: AbortSignal,
  serveReads = false,
  hasherFor?: (algorithm: string) => Promise<BlockHasher>,
  hostFiles?: HostFileRoot,
): Promise<TargetControlResult> {
  const result: TargetControlResult = { requests: 0 };
  const reads = serveReads ? new SourceReads(target, hasherFor) : undefined;
  const files = hostFiles ? new HostFileSession(hostFiles) : undefined;
  const onStop = () => conn.interrupt();
  stopping?.addEventListener('abort', onStop, { once: true });
  try {
    let next: RequestMessage | undefined = first;
    while (next) {
      const op = Object.hasOwn(TARGET_OPS, next.op) ? TARGET_OPS[next.op] : undefined;
      const read = reads && Object.hasOwn(SOURCE_OPS, next.op) ? SOURCE_OPS[next.op] : undefined;
      const file = files && Object.hasOwn(HOST_FILE_OPS, next.op) ? HOST_FILE_OPS[next.op] : undefined;
      let answer: { result: unknown } | { error: { code: ReplikitError['code']; message: string } };
      const options = stopping ? { signal: stopping } : {};
      const args = next.args;
      // The source feature's reads, and pullDisk (docs/protocol.md, section 13).
      const extra =
        read && reads
          ? () => read.run(reads, args, options)
          : file && files
            ? () => file.run(files, args, options)
            : next.op === 'pullDisk'
              ? () => runPullDisk(target, args, options, dialSource)
              : undefined;
      if (extra) {
        try {
          answer = { result: await extra() };
        } catch (error) {
          if (isProtocolError(error)) throw error;
          answer = { error: errorOf(error) };
        }
      } else if (!op) {
        answer = {
          error: {
            code: 'E_INPUT',
            message: `the agent knows no target operation '${next.op}'; upgrade replikit-agent to the engine's version`,
          },
        };
      } else {
        try {
          answer = { result: (await op.run(target, next.args, stopping ? { signal: stopping } : {})) ?? null };
        } catch (error) {
          if (isProtocolError(error)) throw error;
          answer = { error: errorOf(error) };
        }
      }
      result.requests++;
      if (conn.error) break;
      conn.send({ type: 'response', id: next.id, ...answer });
      if (stopping?.aborted) break;
      const message = await conn.nextOrInterrupt();
      if (message === undefined) break;
      if (message.type !== 'request') {
        throw new ProtocolError(`unexpected '${message.type}' frame on a target-control connection`);
      }
      next = message;
    }
  } catch (error) {
    // A connection that ended (the source closed it, or it idled out) is how control normally ends.
    if (!conn.error) {
      const failure = isReplikitError(error) ? error : new DriverError(`the agent failed: ${String(error)}`);
      result.error = failure;
      conn.abort(failure);
    } else if (isProtocolError(conn.error)) result.error = conn.error;
  } finally {
    stopping?.removeEventListener('abort', onStop);
    await reads?.close();
    await files?.close();
  }
  return result;
}
