import { fault } from '../xapi-fault.js';

/** The size of one changed-block-tracking block: 64 KiB, as XenServer tracks. */
export const CBT_BLOCK = 64 * 1024;

interface CbtLog {
  /** One bit per 64 KiB block, most significant bit first (block k: byte k>>3, mask 0x80>>(k&7)). */
  bits: Uint8Array;
  /** The VDI whose log precedes this one on the chain (an older snapshot). */
  parent?: string;
  /** The VDI whose log follows this one (a newer snapshot or the live VDI). */
  child?: string;
}

const bitmapBytes = (virtualSize: number) => Math.ceil(Math.ceil(virtualSize / CBT_BLOCK) / 8);

/**
 * The CBT logs of the simulated SRs, one per VDI with CBT enabled, chained from older snapshot to
 * newer like SM's logs: a snapshot takes over the live VDI's log, the live VDI starts an empty one
 * linked after it, and `list_changed_blocks` ORs the logs after `from` up to `to`.
 */
export class CbtStore {
  private readonly logs = new Map<string, CbtLog>();

  /** True if the VDI has a log. */
  has(vdi: string): boolean {
    return this.logs.has(vdi);
  }

  /** Starts an empty log for a VDI (no chain). Idempotent. */
  enable(vdi: string, virtualSize: number): void {
    if (!this.logs.has(vdi)) this.logs.set(vdi, { bits: new Uint8Array(bitmapBytes(virtualSize)) });
  }

  /** Drops a VDI's log; the chain is cut on both sides. */
  disable(vdi: string): void {
    const log = this.logs.get(vdi);
    if (log === undefined) return;
    if (log.parent !== undefined) {
      const p = this.logs.get(log.parent);
      if (p !== undefined) p.child = undefined;
    }
    if (log.child !== undefined) {
      const c = this.logs.get(log.child);
      if (c !== undefined) c.parent = undefined;
    }
    this.logs.delete(vdi);
  }

  /** Marks the 64 KiB blocks that `[offset, offset+length)` touches. */
  markWrite(vdi: string, offset: number, length: number): void {
    const log = this.logs.get(vdi);
    if (log === undefined || length <= 0) return;
    const first = Math.floor(offset / CBT_BLOCK);
    const last = Math.floor((offset + length - 1) / CBT_BLOCK);
    for (let k = first; k <= last && k >> 3 < log.bits.length; k++) log.bits[k >> 3]! |= 0x80 >> (k & 7);
  }

  /** `live` was snapshotted into `snap`: the snapshot takes the log, the live VDI starts a new one. */
  snapshot(live: string, snap: string): void {
    const log = this.logs.get(live);
    if (log === undefined) return;
    const taken: CbtLog = { bits: log.bits, child: live };
    if (log.parent !== undefined) {
      taken.parent = log.parent;
      const p = this.logs.get(log.parent);
      if (p !== undefined) p.child = snap;
    }
    this.logs.set(snap, taken);
    this.logs.set(live, { bits: new Uint8Array(log.bits.length), parent: snap });
  }

  /** A VDI was resized: its bitmap grows with it. */
  resize(vdi: string, virtualSize: number): void {
    const log = this.logs.get(vdi);
    if (log === undefined) return;
    const bits = new Uint8Array(bitmapBytes(virtualSize));
    bits.set(log.bits.subarray(0, bits.length));
    log.bits = bits;
  }

  /** A VDI was destroyed: its log goes, the neighbours are linked to each other. */
  forget(vdi: string): void {
    const log = this.logs.get(vdi);
    if (log === undefined) return;
    const p = log.parent === undefined ? undefined : this.logs.get(log.parent);
    const c = log.child === undefined ? undefined : this.logs.get(log.child);
    if (p !== undefined) p.child = log.child;
    if (c !== undefined) {
      c.parent = log.parent;
      // the blocks changed before `vdi` are still changes relative to its parent
      const merged = new Uint8Array(Math.max(c.bits.length, log.bits.length));
      merged.set(log.bits);
      for (let i = 0; i < c.bits.length; i++) merged[i]! |= c.bits[i]!;
      c.bits = merged;
    }
    this.logs.delete(vdi);
  }

  /**
   * The blocks changed between `from` (older) and `to` (newer) as XAPI encodes them (base64 of
   * the MSB-first bitmap). Fails as SM does when the two are not on one chain in that order.
   */
  changedBlocks(from: string, to: string): string {
    const failure = () => fault('SR_BACKEND_FAILURE_460', '', 'Failed to calculate changed blocks for given VDIs.', '');
    const start = this.logs.get(from);
    if (from === to || start === undefined || !this.logs.has(to)) throw failure();
    let acc = new Uint8Array(0);
    let cursor = start.child;
    const seen = new Set<string>([from]);
    while (cursor !== undefined && !seen.has(cursor)) {
      seen.add(cursor);
      const log = this.logs.get(cursor);
      if (log === undefined) break;
      const next = new Uint8Array(Math.max(acc.length, log.bits.length));
      next.set(acc);
      for (let i = 0; i < log.bits.length; i++) next[i]! |= log.bits[i]!;
      acc = next;
      if (cursor === to) return Buffer.from(acc).toString('base64');
      cursor = log.child;
    }
    throw failure();
  }
}
