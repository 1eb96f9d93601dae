import type { XenConnection } from '../xapi/xen-connection.js';
import { AbdLease, stopAbandonedAppliances } from './abd-manager.js';
import type { AbdSettings, AbdTiming } from './abd-settings.js';

/**
 * The pool's appliance for one side of one driver: acquired by the first caller (a failed
 * acquire is retried by the next), shared by every later one, released once at {@link close}.
 */
export class SharedAbdLease {
  private lease: Promise<AbdLease> | undefined;
  private closed = false;

  constructor(
    private readonly connection: XenConnection,
    private readonly settings: AbdSettings,
    private readonly timing: AbdTiming = {},
  ) {}

  /** The lease, acquired now if no caller has yet. */
  get(signal?: AbortSignal): Promise<AbdLease> {
    if (!this.lease) {
      const acquiring = AbdLease.acquire(this.connection, this.settings, {
        ...this.timing,
        ...(signal ? { signal } : {}),
      });
      this.lease = acquiring;
      acquiring.catch(() => {
        if (this.lease === acquiring) this.lease = undefined;
      });
    }
    return this.lease;
  }

  /**
   * Releases the appliance (stopping it unless the job keeps it). Without a lease (nothing was
   * read or written through the appliance), stops one that a killed run of this host left running
   * (see {@link stopAbandonedAppliances}), unless the job keeps its appliance. Calling it twice is
   * harmless.
   */
  async close(): Promise<void> {
    const lease = this.lease;
    this.lease = undefined;
    if (!lease) {
      if (this.settings.persistent !== true && !this.closed) {
        await stopAbandonedAppliances(this.connection, this.timing.unplugAttempts);
      }
      this.closed = true;
      return;
    }
    this.closed = true;
    const held = await lease.catch(() => undefined);
    await held?.release();
  }
}
