import type { SimState } from './sim-state.js';
import { XapiFault } from './xapi-fault.js';

/**
 * Failures a test can ask the simulated host for, the way real hosts misbehave: a chosen call
 * failing once, too many pending tasks, and a VDI still "in use" for a while after its VBD was
 * unplugged (XAPI's race with tapdisk).
 */
export class Faults {
  private readonly failures = new Map<string, string[][]>();
  /** Refuse `Async.*` calls with `TOO_MANY_PENDING_TASKS` while this many tasks are pending. */
  pendingTaskLimit = Number.POSITIVE_INFINITY;
  /** VDIs that answer `VDI_IN_USE` to destroy/data_destroy until released. */
  private readonly lingering = new Set<string>();
  /** Whether `VBD.unplug` leaves its VDI lingering (see {@link Faults.releaseUnplugged}). */
  unplugRace = false;

  /** Cut the connection of the next data export (raw, VHD or XVA) after this many body bytes. */
  dropNextExportAfter: number | undefined;
  /** Limit every data path (export and import bodies) to this many bytes per second: a slow link. */
  linkBytesPerSecond: number | undefined;

  /** The next call of `method` (wire name without `Async.`) fails with this error description. */
  failNext(method: string, code: string, ...params: string[]): void {
    const queue = this.failures.get(method) ?? [];
    queue.push([code, ...params]);
    this.failures.set(method, queue);
  }

  /** Throws the failure queued for `method`, if any. */
  takeFailure(method: string): void {
    const queue = this.failures.get(method);
    const next = queue?.shift();
    if (queue !== undefined && queue.length === 0) this.failures.delete(method);
    if (next !== undefined) throw new XapiFault(next[0]!, next.slice(1));
  }

  /** Throws `TOO_MANY_PENDING_TASKS` when the limit is reached. */
  checkPendingTasks(sim: SimState): void {
    if (sim.running.size >= this.pendingTaskLimit) throw new XapiFault('TOO_MANY_PENDING_TASKS', []);
  }

  /** Called by `VBD.unplug`: with {@link Faults.unplugRace} on, the VDI lingers. */
  unplugged(vdi: string): void {
    if (this.unplugRace) this.lingering.add(vdi);
  }

  /** True while a VDI lingers after an unplug. */
  isLingering(vdi: string): boolean {
    return this.lingering.has(vdi);
  }

  /** Ends the unplug race: every lingering VDI becomes free. */
  releaseUnplugged(): void {
    this.lingering.clear();
  }
}
