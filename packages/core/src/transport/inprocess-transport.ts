import type { DiskRef, OperationOptions } from '../contracts/disk.js';
import type { Hypervisor } from '../contracts/hypervisor.js';
import type {
  BlockChannel,
  BlockDigest,
  BlockOp,
  DeltaOp,
  DiskChannel,
  SessionSpec,
  Transport,
} from '../contracts/transport.js';
import { createNodeHasher, type HasherFactory } from '../engine/block-hasher.js';
import { TransportError, throwIfAborted } from '../errors.js';
import { BlockTarget, type TargetDisk } from './block-target.js';
import { FRAME_OVERHEAD_BYTES } from './frame-size.js';

/** Options of {@link createInProcessTransport}. */
export interface InProcessTransportOptions {
  /** The target hypervisor the replica lives on. */
  target: Hypervisor;
  /**
   * Resolves a hasher by algorithm for the target side's digests.
   * @default node:crypto through {@link createNodeHasher}
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

  async sendDelta(op: DeltaOp, options?: OperationOptions): Promise<void> {
    if (this.closed) throw new TransportError(`disk channel ${this.disk.id} is closed`);
    throwIfAborted(options?.signal);
    if (op.index < this.sentEnd) {
      throw new TransportError(`block ${op.index} sent out of order (after block ${this.sentEnd - 1})`);
    }
    this.sentEnd = op.index + 1;
    await this.target.applyDelta(this.verifyDigests ? op : { index: op.index, delta: op.delta }, options);
    this.bytesSent += FRAME_OVERHEAD_BYTES + op.delta.length + (op.digest?.length ?? 0);
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
 * replica writer without a copy. The default when a job has no `transport` section.
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
