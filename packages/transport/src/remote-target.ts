import type { Duplex } from 'node:stream';
import {
  AbortError,
  type Capabilities,
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  DriverError,
  driverKinds,
  type Hypervisor,
  isReplikitError,
  type OperationOptions,
  type Replica,
  type ReplicaFingerprint,
  type ReplicaOwner,
  type ReplicaSpec,
  type RestorePoint,
  type RestorePointOptions,
  type Snapshot,
  type Transport,
  TransportError,
  throwIfAborted,
  type VMInfo,
} from '@replikit/core';
import { availableCodecs } from './codecs.js';
import { FrameConnection, RemoteError } from './connection.js';
import { handshake } from './handshake.js';
import { HOST_FILE_OPS } from './host-file-ops.js';
import { FEATURE_TARGET, MAX_RESPONSE_PAYLOAD } from './protocol/constants.js';
import type { Message } from './protocol/messages.js';
import { isProtocolError, ProtocolError } from './protocol/protocol-error.js';
import { type PullDiskResult, pullDiskResultOf } from './pull-disk-op.js';
import { RemoteDiskReader } from './remote-disk-reader.js';
import { RemoteHostFiles } from './remote-host-files.js';
import { SOURCE_OPS } from './source-read-ops.js';
import { TARGET_OPS } from './target-control-ops.js';

/** How a {@link RemoteTargetDriver} reaches its agent: the connection factory of push or pull. */
export interface TargetLink {
  /** Opens a fresh byte stream to the agent (dial it, or wait for it to dial). */
  connect(signal: AbortSignal): Promise<Duplex>;
  /** Whether this side opened the stream (push) or the agent did (pull). */
  dialer: boolean;
  /** Who is at the other end, for messages. */
  peer: string;
  /** Shared key for the `hello` proofs (plain TCP). */
  key: Uint8Array | undefined;
  /** Releases what the link holds (a pull listener) once the driver closes. */
  close?(): Promise<void>;
}

/** Capabilities assumed for a kind this process does not know (the agent's driver decides). */
const UNKNOWN_KIND: Capabilities = {
  methods: [],
  canBeSource: false,
  canBeTarget: true,
  changeTracking: false,
  formats: [],
  restorePoints: true,
};

interface Waiting {
  op: string;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * The engine's target driver when the replica lives beside a `replikit-agent`: every target-side
 * operation (ensure the replica, its hold, marks, fingerprints, restore points, revert, power,
 * delete) is a `request` on one authenticated target-control connection to the agent, answered
 * by the agent's own driver. A driver error comes back with its code and is thrown here as a
 * {@link RemoteError} of the same code. Replica disks are written and their digests read through
 * {@link RemoteTargetDriver.transport}, never opened here, so the engine's host needs no access to
 * the replica's storage.
 *
 * The connection opens on the first call and is opened again, once per call, when it was lost
 * (the agent closes an idle one): every operation can be repeated safely.
 */
export class RemoteTargetDriver implements Hypervisor {
  readonly capabilities: Capabilities;
  private conn: FrameConnection | undefined;
  private connecting: Promise<FrameConnection> | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 0;
  private closed = false;
  private readonly lifetime = new AbortController();
  /** The protocol features the agent listed in its last `hello`. */
  private features: readonly string[] = [];

  /**
   * @param kind - The kind of the agent's driver (the job's `target.driver`), for rules and messages.
   * @param link - How the agent is reached.
   * @param transport - The block transport to the same agent.
   */
  constructor(
    readonly kind: string,
    private readonly link: TargetLink,
    readonly transport: Transport,
  ) {
    // The agent's protocol carries no failover hooks and no lease fence: the proxy claims neither
    // (a run under a lease then checks its lease just before the commit).
    this.capabilities = Object.freeze({
      ...(driverKinds().get(kind) ?? UNKNOWN_KIND),
      failover: false,
      fencing: false,
    });
  }

  /** Opens and checks a control connection: the agent must list the `target` feature. */
  private async open(signal?: AbortSignal): Promise<FrameConnection> {
    const abort = signal ? AbortSignal.any([signal, this.lifetime.signal]) : this.lifetime.signal;
    const conn = new FrameConnection(await this.link.connect(abort), this.link.peer);
    try {
      const { peerFeatures } = await handshake(conn, {
        role: 'source',
        dialer: this.link.dialer,
        codecs: availableCodecs(),
        key: this.link.key,
      });
      this.features = peerFeatures;
      if (!peerFeatures.includes(FEATURE_TARGET)) {
        const error = new TransportError(
          `${this.link.peer} does not host the target side (an older replikit-agent, without the protocol feature '${FEATURE_TARGET}'); upgrade replikit-agent there to this version`,
          { details: { feature: FEATURE_TARGET, fatal: true } },
        );
        conn.abort(error);
        throw error;
      }
    } catch (error) {
      conn.destroy();
      throw error;
    }
    // The agent is authenticated: its answers may be larger than a control frame (long listings).
    conn.setMaxResponsePayload(MAX_RESPONSE_PAYLOAD);
    void this.pump(conn);
    return conn;
  }

  /**
   * True when the agent lists protocol feature `feature` (connecting first when needed), such as
   * `read-digests-hasher`.
   */
  async supports(feature: string, options?: OperationOptions): Promise<boolean> {
    await this.connection(options?.signal);
    return this.features.includes(feature);
  }

  /** The live control connection, opened when there is none. */
  private connection(signal?: AbortSignal): Promise<FrameConnection> {
    if (this.closed) return Promise.reject(new DriverError(`the driver of ${this.link.peer} is closed`));
    if (this.conn && !this.conn.error) return Promise.resolve(this.conn);
    this.conn = undefined;
    this.connecting ??= this.open(signal)
      .then((conn) => {
        this.conn = conn;
        return conn;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  /** Reads responses until the connection ends; then fails the calls still waiting. */
  private async pump(conn: FrameConnection): Promise<void> {
    for (;;) {
      let message: Message;
      try {
        message = await conn.next();
      } catch (error) {
        this.failWaiting(conn, error);
        return;
      }
      if (message.type !== 'response') {
        const error = new ProtocolError(`unexpected '${message.type}' frame from ${this.link.peer}`);
        conn.abort(error);
        this.failWaiting(conn, error);
        return;
      }
      const waiting = this.waiting.get(message.id);
      // A call given up (its signal aborted) leaves its id behind; its late answer is dropped.
      if (!waiting) continue;
      this.waiting.delete(message.id);
      if (message.error) {
        waiting.reject(
          new RemoteError(message.error.code, `${this.link.peer} reported: ${message.error.message}`, {
            details: { remote: true, op: waiting.op },
          }),
        );
        continue;
      }
      try {
        const check = TARGET_OPS[waiting.op] ?? SOURCE_OPS[waiting.op] ?? HOST_FILE_OPS[waiting.op];
        waiting.resolve(check ? check.result(message.result) : pullDiskResultOf(message.result));
      } catch (error) {
        conn.abort(error as ProtocolError);
        waiting.reject(error);
        this.failWaiting(conn, error);
        return;
      }
    }
  }

  private failWaiting(conn: FrameConnection, error: unknown): void {
    if (this.conn === conn) this.conn = undefined;
    const all = [...this.waiting.values()];
    this.waiting.clear();
    for (const waiting of all) waiting.reject(new LostConnection(error));
  }

  /** Sends one request and waits for its response; a lost connection is opened again once. */
  private async call<T>(op: string, args: Record<string, unknown>, options?: OperationOptions): Promise<T> {
    throwIfAborted(options?.signal);
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this.callOnce(op, args, options?.signal)) as T;
      } catch (error) {
        if (!(error instanceof LostConnection)) throw error;
        if (attempt > 0 || this.closed || isProtocolError(error.reason) || isFinal(error.reason)) {
          throw asError(error.reason, this.link.peer);
        }
      }
    }
  }

  private async callOnce(op: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<unknown> {
    let conn: FrameConnection;
    try {
      conn = await this.connection(signal);
    } catch (error) {
      throw signal?.aborted ? new AbortError(`the ${op} request to ${this.link.peer} was cancelled`) : error;
    }
    const id = this.nextId;
    this.nextId = (this.nextId + 1) % 0x1_0000_0000;
    return new Promise<unknown>((resolve, reject) => {
      const onAbort = () => {
        this.waiting.delete(id);
        reject(new AbortError(`the ${op} request to ${this.link.peer} was cancelled`));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const settle =
        <V>(done: (value: V) => void) =>
        (value: V) => {
          signal?.removeEventListener('abort', onAbort);
          done(value);
        };
      this.waiting.set(id, { op, resolve: settle(resolve), reject: settle(reject) });
      try {
        conn.send({ type: 'request', id, op, args });
      } catch (error) {
        this.waiting.delete(id);
        settle(reject)(new LostConnection(error));
      }
    });
  }

  listVMs(): Promise<VMInfo[]> {
    return Promise.reject(this.unavailableError('listing VMs'));
  }
  getVM(idOrName: string, options?: OperationOptions): Promise<VMInfo> {
    return this.call('getVM', { id: idOrName }, options);
  }
  snapshot(): Promise<Snapshot> {
    return Promise.reject(this.unavailableError('a snapshot'));
  }
  listSnapshots(): Promise<Snapshot[]> {
    return Promise.reject(this.unavailableError('listing snapshots'));
  }
  deleteSnapshot(): Promise<void> {
    return Promise.reject(this.unavailableError('deleting a snapshot'));
  }
  /** Not available: the replica's digests travel in the block session (`digests-request`). */
  openReader(_disk: DiskRef): Promise<DiskReader> {
    return Promise.reject(this.unavailableError('reading a replica disk'));
  }
  /** Not available: replica disks are written through {@link RemoteTargetDriver.transport}. */
  openWriter(): Promise<DiskWriter> {
    return Promise.reject(this.unavailableError('opening a replica writer outside a block session'));
  }
  ensureReplica(spec: ReplicaSpec, options?: OperationOptions): Promise<Replica> {
    // The agent serves its own --root: a folder named by the engine's job means nothing there.
    const { root: _root, ...placement } = spec.placement ?? {};
    return this.call('ensureReplica', { spec: { ...spec, placement } }, options);
  }
  deleteReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.call('deleteReplica', { replica }, options);
  }
  claimReplica(replica: Replica, owner: ReplicaOwner, options?: OperationOptions): Promise<ReplicaOwner> {
    return this.call('claimReplica', { replica, owner }, options);
  }
  releaseReplica(replica: Replica, runId: string, options?: OperationOptions): Promise<void> {
    return this.call('releaseReplica', { replica, runId }, options);
  }
  replicaOwner(replica: Replica, options?: OperationOptions): Promise<ReplicaOwner | undefined> {
    return this.call('replicaOwner', { replica }, options);
  }
  replicaState(replica: Replica, options?: OperationOptions): Promise<ReplicaFingerprint> {
    return this.call('replicaState', { replica }, options);
  }
  markReplica(replica: Replica, state: 'in-progress' | 'ready', options?: OperationOptions): Promise<void> {
    return this.call('markReplica', { replica, state }, options);
  }
  replicaMark(replica: Replica, options?: OperationOptions): Promise<'in-progress' | 'ready'> {
    return this.call('replicaMark', { replica }, options);
  }
  createRestorePoint(replica: Replica, label: string, options?: RestorePointOptions): Promise<RestorePoint> {
    const retention = options?.retention;
    return this.call('createRestorePoint', { replica, label, ...(retention ? { retention } : {}) }, options);
  }
  listRestorePoints(replica: Replica, options?: OperationOptions): Promise<RestorePoint[]> {
    return this.call('listRestorePoints', { replica }, options);
  }
  revertTo(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    return this.call('revertTo', { replica, point }, options);
  }
  power(vmId: string, op: 'start' | 'shutdown', options?: OperationOptions): Promise<void> {
    return this.call('power', { vmId, op }, options);
  }

  /**
   * Reads a disk the agent's driver lists (`vmId` is the VM that holds it), when the agent serves
   * reads (`replikit-agent --serve-reads`, the protocol feature `source`): the source side of the
   * `abd` method. Reads of up to 4 MiB each travel on the control connection; the agent checks
   * the disk against its own listing and the range against the disk.
   *
   * @throws `E_INPUT` (from the agent) when it does not serve reads.
   */
  openSourceReader(vmId: string, disk: DiskRef, blockSize?: number): RemoteDiskReader {
    return new RemoteDiskReader(
      disk,
      (offset, length, options) =>
        this.call<Uint8Array>('readDisk', { vmId, diskId: disk.id, offset, length }, options),
      blockSize,
    );
  }

  /**
   * Digests of the blocks of `[offset, offset + length)` of a disk the agent's driver lists,
   * computed on the agent (`null` for an all-zero block); at most 4,096 blocks, 256 MiB, per call.
   * Needs the `source` feature, as {@link RemoteTargetDriver.openSourceReader}.
   */
  readDigests(
    vmId: string,
    diskId: string,
    range: { offset: number; length: number; blockSize: number; algorithm: string },
    options?: OperationOptions,
  ): Promise<Array<Uint8Array | null>> {
    return this.call('readDigests', { vmId, diskId, ...range }, options);
  }

  /**
   * Pull (the `abd` method's `direction: pull`): asks this agent to bring disk `disk` (an index of
   * `replica.disks`) of its replica up to date from disk `diskId` of VM `vmId` on another agent that
   * serves reads, at `from` (its address and TLS-PSK key, sent over this authenticated link). The
   * agent compares block digests and copies only the blocks that differ; no replication cache is
   * used (rule `cache-ignored-for-pull`). Needs the protocol feature `pull-disk`.
   */
  pullDisk(
    request: {
      from: { host: string; port: number; identity: string; key: Uint8Array };
      vmId: string;
      diskId: string;
      replica: Replica;
      disk: number;
      blockSize: number;
      algorithm: 'sha256' | 'sha512';
      runId?: string;
      /** Cap on the bytes per second the agent reads from the source; none when absent. */
      bandwidthLimit?: number;
    },
    options?: OperationOptions,
  ): Promise<PullDiskResult> {
    const { from, ...rest } = request;
    return this.call('pullDisk', { ...rest, from: { ...from, key: Buffer.from(from.key).toString('hex') } }, options);
  }

  /**
   * The images and state files under the agent's `--host-files` root, for a `hyperv` driver that
   * controls the host through PowerShell remoting (the protocol feature `host-files`).
   *
   * @throws `E_INPUT` (from the agent) on use when it does not serve host files.
   */
  hostFiles(): RemoteHostFiles {
    return new RemoteHostFiles(this.link.peer, (op, args, options) => this.call(op, args, options));
  }

  /** Closes the control connection (and a pull listener). Calls waiting fail with `E_TRANSPORT`. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lifetime.abort(new AbortError('the remote target driver is closed'));
    // A connection still opening is closed too, once it is open.
    await this.connecting?.catch(() => undefined);
    const conn = this.conn;
    this.conn = undefined;
    await conn?.close().catch(() => undefined);
    await this.link.close?.();
  }

  private unavailableError(what: string): DriverError {
    return new DriverError(
      `${what} is not available through ${this.link.peer}: the agent hosts only the target side (replicas, restore points); run it where the disks are`,
    );
  }
}

/** A call's connection was lost before its response came. */
class LostConnection extends Error {
  constructor(readonly reason: unknown) {
    super('the target-control connection was lost');
  }
}

/** Errors a new connection cannot cure: refused keys, an agent without the feature. */
function isFinal(error: unknown): boolean {
  return isReplikitError(error) && (error.code === 'E_AUTH' || error.details.fatal === true);
}

function asError(error: unknown, peer: string): Error {
  if (isReplikitError(error)) return error;
  return new TransportError(`lost the connection to ${peer}: ${(error as Error)?.message ?? String(error)}`, {
    cause: error,
  });
}

/** True when `driver` is a {@link RemoteTargetDriver} (its block transport goes to the same agent). */
export function isRemoteTarget(driver: unknown): driver is RemoteTargetDriver {
  return driver instanceof RemoteTargetDriver;
}
