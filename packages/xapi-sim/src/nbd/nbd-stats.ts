/** What the NBD server served for one export (one VDI). */
export interface NbdExportStats {
  /** Bytes of data sent in READ replies. */
  bytes: number;
  /** READ requests answered with data. */
  reads: number;
  /** Distinct 64 KiB blocks (CBT's block size) a served read touched. */
  blocks: number;
}

const BLOCK = 64 * 1024;

/**
 * Counters of the simulated NBD server, per export (VDI uuid): what a client really fetched,
 * counted where the data leaves the host rather than by the client.
 */
export class NbdStats {
  private readonly exports = new Map<string, { bytes: number; reads: number; blocks: Set<number> }>();

  /** Counts one READ of `length` bytes at `offset` of the VDI `uuid`. */
  record(uuid: string, offset: number, length: number): void {
    let entry = this.exports.get(uuid);
    if (entry === undefined) {
      entry = { bytes: 0, reads: 0, blocks: new Set() };
      this.exports.set(uuid, entry);
    }
    entry.bytes += length;
    entry.reads += 1;
    if (length <= 0) return;
    for (let k = Math.floor(offset / BLOCK); k <= Math.floor((offset + length - 1) / BLOCK); k++) entry.blocks.add(k);
  }

  /** What was served for the VDI `uuid` since the start or the last {@link NbdStats.reset}. */
  of(uuid: string): NbdExportStats {
    const entry = this.exports.get(uuid);
    return { bytes: entry?.bytes ?? 0, reads: entry?.reads ?? 0, blocks: entry?.blocks.size ?? 0 };
  }

  /** The totals over every export. */
  total(): NbdExportStats {
    let bytes = 0;
    let reads = 0;
    let blocks = 0;
    for (const entry of this.exports.values()) {
      bytes += entry.bytes;
      reads += entry.reads;
      blocks += entry.blocks.size;
    }
    return { bytes, reads, blocks };
  }

  /** Starts counting from zero. */
  reset(): void {
    this.exports.clear();
  }
}
