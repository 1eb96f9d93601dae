import type { BlockDigest, ReplicaDigestsFrom } from '@replikit/core';
import type { PullDiskResult } from '@replikit/transport';
import type { VdiSink, VdiSinkTarget } from '../vdi-sink.js';
import type { XenConnection } from '../xapi/xen-connection.js';
import type { AbdLease, PluggedVdi } from './abd-manager.js';
import { type AbdPullFrom, type AbdPullOptions, pullIntoVdi } from './abd-pull.js';
import { digestVdiThroughAbd } from './abd-replica-digests.js';
import type { AbdSettings, AbdTiming } from './abd-settings.js';
import { type AbdWriteStats, emptyAbdWriteStats, openAbdTargetSink } from './abd-target-sink.js';
import { SharedAbdLease } from './shared-lease.js';

/** Options of {@link AbdTargetWrites.pull}. */
export type PullIntoOptions = Pick<AbdPullOptions, 'blockSize' | 'runId' | 'signal'> & {
  /** Cap on the bytes per second the target appliance reads from the source (none when absent). */
  bandwidthLimit?: number;
};

/**
 * The target side of a Xen driver with an `abd` section: each pending replica VDI is plugged
 * read-write into the pool's appliance while its writer is open and written through the agent
 * ({@link openAbdTargetSink}); XAPI carries no replica bytes. The appliance is acquired on the
 * first writer; {@link AbdTargetWrites.close} (the driver's close) unplugs what is left and
 * releases it (stopping it unless the job keeps it).
 */
export class AbdTargetWrites {
  private readonly shared: SharedAbdLease;
  /** What the sinks of this driver sent to the appliance, added up. */
  readonly stats: AbdWriteStats = emptyAbdWriteStats();
  /** The sinks open now (aborted before their VDIs are destroyed). */
  private readonly sinks = new Set<UnpluggingSink>();

  constructor(connection: XenConnection, settings: AbdSettings, timing: AbdTiming = {}) {
    this.shared = new SharedAbdLease(connection, settings, timing);
  }

  /** A {@link VdiSink} of the pending VDI `target.vdiRef`; closing or aborting it unplugs the VDI. */
  async open(target: VdiSinkTarget, runId?: string): Promise<VdiSink> {
    const signal = target.signal;
    const lease = await this.shared.get(signal);
    const plugged = await lease.plug(target.vdiRef, 'RW', signal);
    try {
      const inner = await openAbdTargetSink(lease, plugged, {
        stats: this.stats,
        ...(runId !== undefined ? { runId } : {}),
        ...(signal ? { signal } : {}),
      });
      const sink = new UnpluggingSink(inner, lease, plugged, () => this.sinks.delete(sink));
      this.sinks.add(sink);
      return sink;
    } catch (error) {
      await lease.unplug(plugged).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Brings the pending VDI `vdiRef` up to date from what `from` serves (job direction `pull`): the
   * VDI is plugged read-write into the pool's appliance, whose agent pulls only the blocks whose
   * digests differ straight from the source appliance; the VDI is unplugged after, also on failure.
   */
  async pull(vdiRef: string, from: AbdPullFrom, options: PullIntoOptions = {}): Promise<PullDiskResult> {
    const signal = options.signal;
    const lease = await this.shared.get(signal);
    const plugged = await lease.plug(vdiRef, 'RW', signal);
    try {
      return await pullIntoVdi(lease, plugged, from, options);
    } finally {
      await lease.unplug(plugged);
    }
  }

  /**
   * Digests of the committed replica VDI `vdiRef` (`size` bytes) computed by the pool's appliance
   * (see `digestVdiThroughAbd`): the VDI is plugged read-only into it for the walk and
   * unplugged after, also when the walk stops early, fails or is aborted.
   */
  async *digests(
    vdiRef: string,
    size: number,
    from: ReplicaDigestsFrom,
    signal?: AbortSignal,
  ): AsyncIterable<BlockDigest> {
    const lease = await this.shared.get(signal);
    yield* digestVdiThroughAbd(lease, vdiRef, size, from, signal);
  }

  /**
   * Aborts every sink still open, which unplugs its VDI: called before pending VDIs are destroyed
   * (a failed run's rollback), as XAPI refuses to destroy a VDI plugged into the appliance.
   */
  async abortAll(): Promise<void> {
    const sinks = [...this.sinks];
    this.sinks.clear();
    const results = await Promise.allSettled(sinks.map((s) => s.drop()));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Unplugs every VDI still plugged and releases the appliance. Calling it twice is harmless. */
  async close(): Promise<void> {
    this.sinks.clear();
    await this.shared.close();
  }
}

/** A sink that unplugs its VDI from the appliance once it is closed or aborted. */
class UnpluggingSink implements VdiSink {
  private done = false;
  /** Dropped by {@link AbdTargetWrites.abortAll}: the VDI is being destroyed with its writes. */
  private dropped = false;

  constructor(
    private readonly inner: VdiSink,
    private readonly lease: AbdLease,
    private readonly plugged: PluggedVdi,
    private readonly onEnd: () => void,
  ) {}

  write(offset: number, bytes: Uint8Array): Promise<void> {
    return this.inner.write(offset, bytes);
  }
  writeZeroes(offset: number, length: number): Promise<void> {
    return this.inner.writeZeroes(offset, length);
  }
  /** After {@link UnpluggingSink.drop} there is nothing left to make durable: resolves at once. */
  async flush(): Promise<void> {
    if (this.dropped) return;
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.end(() => this.inner.close());
  }
  /** Aborts and unplugs because the replica's revert or delete destroys the VDI and its writes. */
  drop(): Promise<void> {
    this.dropped = true;
    return this.abort();
  }
  abort(): Promise<void> {
    return this.end(() => this.inner.abort());
  }

  private async end(how: () => Promise<void>): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.onEnd();
    try {
      await how();
    } finally {
      await this.lease.unplug(this.plugged);
    }
  }
}
