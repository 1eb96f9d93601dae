import type { DiskChannel } from '../../contracts/transport.js';
import type { TokenBucket } from '../../util/token-bucket.js';
import type { TransferStats } from '../run-record.js';
import { SendWindow } from '../send-window.js';

/**
 * The pipeline's last two steps, throttle and send: zero blocks are merged into runs, data and
 * deltas are counted and handed to the channel in block order. Zero runs own their bytes, so
 * several may be pending at once when the channel allows; data ops and deltas are awaited, as
 * their bytes may live in read buffers that are reused.
 */
export class BlockSender {
  private readonly sends: SendWindow;
  private zeroRun: { index: number; count: number } | undefined;
  private readonly sentBefore: number;
  private readonly writtenBefore: number;

  constructor(
    private readonly channel: DiskChannel,
    private readonly stats: TransferStats,
    private readonly options: { digestOnWire: boolean; throttle?: TokenBucket; signal?: AbortSignal },
  ) {
    this.sends = new SendWindow(channel.maxPendingSends ?? 1);
    this.sentBefore = stats.bytesSent;
    this.writtenBefore = stats.bytesWritten;
  }

  /** True when the channel takes blocks as differences from the replica's block. */
  get takesDeltas(): boolean {
    return this.channel.sendDelta !== undefined;
  }

  /** Zeroes `count` blocks from `index` (merged with the run before it when adjacent). */
  async zero(index: number, count = 1): Promise<void> {
    const run = this.zeroRun;
    if (run && run.index + run.count === index) {
      run.count += count;
      return;
    }
    await this.flushZero();
    this.zeroRun = { index, count };
  }

  /** Sends a block whole. */
  async data(index: number, data: Uint8Array, digest: Uint8Array | undefined): Promise<void> {
    const { signal } = this.options;
    await this.flushZero();
    await this.options.throttle?.take(data.length, signal);
    await this.sends.drain();
    await this.channel.send(
      { kind: 'data', index, data, ...(digest && this.options.digestOnWire ? { digest } : {}) },
      { signal },
    );
    this.stats.blocksChanged++;
  }

  /**
   * Offers a block to the channel as a difference from `base` (the replica's block; `null`: zeros):
   * the channel encodes it, or sends the block whole when that does not pay. Awaited like a data
   * op: the block and its base may live in read buffers that are reused.
   */
  async delta(
    index: number,
    block: Uint8Array,
    base: Uint8Array | null,
    digest: Uint8Array | undefined,
  ): Promise<void> {
    const { signal } = this.options;
    await this.flushZero();
    await this.sends.drain();
    const op = { index, block, base, ...(digest && this.options.digestOnWire ? { digest } : {}) };
    const sent = await this.channel.sendDelta!(op, { signal });
    await this.options.throttle?.take(sent.bytes, signal);
    this.stats.blocksChanged++;
    if (sent.delta) this.stats.blocksDelta++;
  }

  /** Sends what is pending and makes it durable on the replica (the channel's checkpoint). */
  async checkpoint(): Promise<void> {
    await this.flushZero();
    await this.sends.drain();
    await this.channel.checkpoint({ signal: this.options.signal });
  }

  /** Copies the channel's byte counters into the disk's. */
  syncCounters(): void {
    this.stats.bytesSent = this.sentBefore + this.channel.bytesSent;
    this.stats.bytesWritten = this.writtenBefore + this.channel.bytesWritten;
  }

  /** After a failure: lets pending sends settle. */
  async settle(): Promise<void> {
    await this.sends.drain().catch(() => undefined);
  }

  private async flushZero(): Promise<void> {
    const run = this.zeroRun;
    if (!run) return;
    this.zeroRun = undefined;
    const { signal } = this.options;
    await this.sends.start(() => this.channel.send({ kind: 'zero', index: run.index, count: run.count }, { signal }));
    this.stats.blocksZero += run.count;
  }
}
