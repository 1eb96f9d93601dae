import { createHash } from 'node:crypto';
import type { DiskRef, Hypervisor, PullSource } from '../../src/index.js';

/** What {@link attachPullHooks} saw: each pull's run id and result, and offers still open. */
export interface PullLog {
  pulls: Array<{ runId: string | undefined; disk: number; blocks: number; copied: number }>;
  open: Set<string>;
  /** Most pulls seen running at once. */
  maxInFlight: number;
  /** The `bandwidthLimit` each pull was given (undefined: none), in start order. */
  limits: Array<number | undefined>;
  /** When set, a pull fails after copying this many blocks (a source lost mid-pull). */
  failAfter?: number;
}

/**
 * Gives two test drivers the optional pull hooks: `source.pullSource` offers a snapshot disk (the
 * "address" names it), `target.pullDiskFrom` compares each block's digest with the replica's and
 * writes the differing ones through its own writer, as an agent does.
 */
export function attachPullHooks(source: Hypervisor, target: Hypervisor): PullLog {
  const log: PullLog = { pulls: [], open: new Set(), maxInFlight: 0, limits: [] };
  let inFlight = 0;
  const offered = new Map<string, DiskRef>();
  let next = 0;
  Object.assign(source, {
    async pullSource(_snapshot, disk): Promise<PullSource> {
      const id = `offer-${next++}`;
      offered.set(id, disk);
      log.open.add(id);
      return {
        kind: source.kind,
        address: { host: '127.0.0.1', port: 1 },
        credential: { identity: id, key: new Uint8Array(16) },
        vmId: disk.vmId,
        diskId: disk.id,
        size: disk.size,
        close: async () => {
          log.open.delete(id);
        },
      };
    },
  } satisfies Pick<Hypervisor, 'pullSource'>);
  Object.assign(target, {
    async pullDiskFrom(offer, replica, diskIndex, options) {
      const from = offered.get(offer.credential.identity);
      if (!from || !log.open.has(offer.credential.identity)) throw new Error('the offer is closed');
      const disk = replica.disks[diskIndex]!;
      log.limits.push(options.bandwidthLimit);
      log.maxInFlight = Math.max(log.maxInFlight, ++inFlight);
      const theirs = await source.openReader(from);
      const mine = await target.openReader(disk);
      const writer = await target.openWriter(replica, disk, options);
      const result = { blocks: 0, copied: 0, bytesRead: 0 };
      try {
        for (let at = 0; at < from.size; at += options.blockSize) {
          const n = Math.min(options.blockSize, from.size - at);
          const digest = async (reader: typeof mine) =>
            createHash('sha256')
              .update(await reader.read(at, n))
              .digest('hex');
          result.blocks++;
          if ((await digest(theirs)) === (await digest(mine))) continue;
          if (log.failAfter !== undefined && result.copied >= log.failAfter) throw new Error('source agent gone');
          await writer.write(at, await theirs.read(at, n));
          result.copied++;
          result.bytesRead += n;
        }
        await writer.flush();
      } finally {
        inFlight--;
        await writer.close();
        await mine.close();
        await theirs.close();
      }
      log.pulls.push({ runId: options.runId, disk: diskIndex, blocks: result.blocks, copied: result.copied });
      return result;
    },
  } satisfies Pick<Hypervisor, 'pullDiskFrom'>);
  return log;
}
