import {
  type BlockChannel,
  type BlockDigest,
  type BlockOp,
  type DiskChannel,
  type DiskRef,
  type EngineOptions,
  type HasherFactory,
  type Hypervisor,
  type OperationOptions,
  type SessionSpec,
  type Transport,
  TransportError,
  throwIfAborted,
} from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { BlockTarget, type TargetDisk } from './wire/block-target.js';
import { FRAME_OVERHEAD_BYTES } from './wire/frame-size.js';

/** Options of {@link createInProcessTransport}. */
export interface InProcessTransportOptions {
  /** The target hypervisor the replica lives on. */
  target: Hypervisor;
  /**
   * Resolves a hasher by algorithm for the target side's digests.
   * @default node:crypto (sha256 and the other algorithms it knows)
   */
  hasher?: HasherFactory;
  /**
   * Check each block's digest on the target side even though it never left the process
   * (useful in tests of the pipeline; costs one hash per block).
   * @default false
   */
  verifyDigests?: boolean;
}

class InProcessDiskChannel implements DiskChannel {
  /** Every op is written before `send` resolves. */
  readonly releasesDataOnSend = true;
  /** Blocks go to the replica writer as they come; non-overlapping writes may overlap in time. */
  readonly maxPendingSends = 32;
  bytesSent = 0;
  private sentEnd = 0;
  private closed = false;

  constructor(
    private readonly target: TargetDisk,
    private readonly verifyDigests: boolean,
  ) {}

  get disk(): DiskRef {
    return this.target.disk;
  }

  get bytesWritten(): number {
    return this.target.bytesWritten;
  }

  replicaDigests(fromBlock: number, options?: OperationOptions): AsyncIterable<BlockDigest> {
    return this.target.digests(fromBlock, options);
  }

  async send(op: BlockOp, options?: OperationOptions): Promise<void> {
    if (this.closed) throw new TransportError(`disk channel ${this.disk.id} is closed`);
    throwIfAborted(options?.signal);
    if (op.index < this.sentEnd) {
      throw new TransportError(`block ${op.index} sent out of order (after block ${this.sentEnd - 1})`);
    }
    const forwarded = op.kind === 'data' && !this.verifyDigests && op.digest ? { ...op, digest: undefined } : op;
    // The order is checked when a send starts: several may be pending (see maxPendingSends).
    this.sentEnd = op.index + (op.kind === 'zero' ? op.count : 1);
    await this.target.apply(forwarded, options);
    this.bytesSent += FRAME_OVERHEAD_BYTES + (op.kind === 'data' ? op.data.length + (op.digest?.length ?? 0) : 0);
  }

  async checkpoint(options?: OperationOptions): Promise<number> {
    await this.target.flush(options);
    return this.sentEnd;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.target.close();
  }
}

/**
 * A {@link Transport} whose target side runs in the same process: blocks are handed to the
 * replica writer without a copy. It takes no deltas: a local copy gains nothing from one, and
 * building one would cost a read of the previous snapshot's block for every changed block.
 */
export function createInProcessTransport(options: InProcessTransportOptions): Transport {
  const target = new BlockTarget(options.target, options.hasher ?? createNodeHasher);
  const verifyDigests = options.verifyDigests ?? false;
  return {
    name: 'inprocess',
    async open(session: SessionSpec): Promise<BlockChannel> {
      const open = new Set<InProcessDiskChannel>();
      return {
        async openDisk(disk, diskOptions) {
          const targetDisk = await target.openDisk(session.replica, disk, session.blockSize, session.digest, {
            ...diskOptions,
            runId: session.runId,
          });
          const channel = new InProcessDiskChannel(targetDisk, verifyDigests);
          open.add(channel);
          return channel;
        },
        async close() {
          const errors: unknown[] = [];
          for (const channel of open) await channel.close().catch((error: unknown) => errors.push(error));
          open.clear();
          if (errors.length) throw errors[0];
        },
      };
    },
  };
}

/**
 * The engine's `transport` option for a replica on this machine: an in-process transport to the
 * run's target driver, checking digests with the run's hasher.
 *
 * @example
 * ```ts
 * import { FileStateStore, ReplicationEngine } from '@replikit/core';
 * import { localTransport } from '@replikit/transport';
 *
 * const engine = new ReplicationEngine({ stateStore: new FileStateStore('.replikit'), transport: localTransport() });
 * ```
 */
export function localTransport(
  options: Omit<InProcessTransportOptions, 'target' | 'hasher'> = {},
): EngineOptions['transport'] {
  return (target, _run, hasher) => createInProcessTransport({ ...options, target, hasher: () => hasher });
}
