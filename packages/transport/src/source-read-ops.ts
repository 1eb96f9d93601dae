import { createHash } from 'node:crypto';
import {
  type BlockHasher,
  type DiskReader,
  type Hypervisor,
  InputError,
  NotFoundError,
  type OperationOptions,
} from '@replikit/core';
import { isZeroBlock } from '@replikit/core/internal';
import { MAX_BLOCK_SIZE, MAX_DIGESTS_PER_FRAME } from './protocol/constants.js';
import { ProtocolError } from './protocol/protocol-error.js';
import { integerOf, objectOf, stringOf } from './target-control-shapes.js';

/**
 * Most bytes one `readDisk` returns: the response carries them as base64 in JSON, and must stay
 * under the response frame's bound (8 MiB) with room to spare.
 */
export const MAX_READ_BYTES = 4 * 1024 * 1024;

/** Most bytes one `readDigests` hashes (the agent reads them all before it answers). */
export const MAX_DIGEST_SPAN = 256 * 1024 * 1024;

/** Most disk readers one connection keeps open (the oldest is closed past it). */
const MAX_OPEN_READERS = 64;

/** Digest algorithms `readDigests` computes (node:crypto's names). */
export const READ_DIGEST_ALGORITHMS: ReadonlySet<string> = new Set(['sha256', 'sha512', 'sha1', 'md5']);
const DIGESTS = READ_DIGEST_ALGORITHMS;

/**
 * The disk readers of one connection of an agent that serves reads (the `source` feature): a
 * disk is opened on its first read, after its VM's listing from the agent's own driver is checked
 * to hold it — the peer's claim of a disk id is never enough — and kept until the connection ends.
 */
export class SourceReads {
  private readonly readers = new Map<string, Promise<DiskReader>>();

  /**
   * @param driver - The agent's driver, whose disks are read.
   * @param hasherFor - The agent's block hasher by algorithm: `readDigests` computes the algorithms
   * it makes too (`xxh128`…), besides node:crypto's. Absent: node:crypto's only.
   */
  constructor(
    private readonly driver: Hypervisor,
    readonly hasherFor?: (algorithm: string) => Promise<BlockHasher>,
  ) {}

  /** The reader of disk `diskId` of VM `vmId`, opened on first use. */
  reader(vmId: string, diskId: string, options: OperationOptions): Promise<DiskReader> {
    const key = JSON.stringify([vmId, diskId]);
    let reader = this.readers.get(key);
    if (!reader) {
      reader = (async () => {
        const vm = await this.driver.getVM(vmId, options);
        const disk = vm.disks.find((d) => d.id === diskId);
        if (!disk) throw new NotFoundError(`VM ${vmId} has no disk ${diskId} on this agent`);
        return this.driver.openReader(disk, options);
      })();
      reader.catch(() => this.readers.delete(key));
      this.readers.set(key, reader);
      if (this.readers.size > MAX_OPEN_READERS) {
        const [oldest, open] = this.readers.entries().next().value!;
        this.readers.delete(oldest);
        void open.then((r) => r.close()).catch(() => undefined);
      }
    }
    return reader;
  }

  /** Closes every reader (the connection ended). */
  async close(): Promise<void> {
    const open = [...this.readers.values()];
    this.readers.clear();
    await Promise.all(open.map((r) => r.then((reader) => reader.close()).catch(() => undefined)));
  }
}

/** The agent's own hasher for `algorithm`, or the protocol error that names what it computes. */
async function agentHasher(reads: SourceReads, algorithm: string): Promise<BlockHasher> {
  const refuse = () =>
    new ProtocolError(
      `readDigests algorithm must be one of ${[...DIGESTS].join(', ')}${reads.hasherFor ? " or one of this agent's block hasher" : ''}, not '${algorithm}'`,
    );
  if (!reads.hasherFor) throw refuse();
  try {
    return await reads.hasherFor(algorithm);
  } catch {
    throw refuse();
  }
}

/** One source-side operation: run on the agent, checked on the engine's side. */
interface SourceOp {
  run(reads: SourceReads, args: Record<string, unknown>, options: OperationOptions): Promise<unknown>;
  result(value: unknown): unknown;
}

/** A range of a disk, checked: whole numbers, `length` from 1 to `max`, inside the disk. */
function rangeOf(args: Record<string, unknown>, max: number): { offset: number; length: number } {
  return { offset: integerOf(args.offset, 'offset'), length: integerOf(args.length, 'length', 1, max) };
}

/** A range outside the disk is the asker's mistake: answered with `E_INPUT`, the connection goes on. */
function inside(reader: DiskReader, offset: number, length: number, diskId: string): void {
  if (offset + length > reader.size) {
    throw new InputError(`range ${offset} (+${length}) lies outside disk ${diskId} (${reader.size} bytes)`);
  }
}

/**
 * The operations an agent that lists the `source` feature answers on a target-control
 * connection (docs/protocol.md, section 13): reads and block digests of its driver's disks.
 */
export const SOURCE_OPS: Readonly<Record<string, SourceOp>> = {
  readDisk: {
    async run(reads, a, o) {
      const vmId = stringOf(a.vmId, 'vmId');
      const diskId = stringOf(a.diskId, 'diskId');
      const { offset, length } = rangeOf(a, MAX_READ_BYTES);
      const reader = await reads.reader(vmId, diskId, o);
      inside(reader, offset, length, diskId);
      const bytes = await reader.read(offset, length, o);
      return { data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') };
    },
    result(value) {
      const body = objectOf(value, 'readDisk result');
      const data = body.data;
      if (
        typeof data !== 'string' ||
        data.length > Math.ceil(MAX_READ_BYTES / 3) * 4 ||
        !/^[A-Za-z0-9+/]*={0,2}$/.test(data)
      ) {
        throw new ProtocolError('readDisk result.data must be base64 of at most 4 MiB');
      }
      return Buffer.from(data, 'base64');
    },
  },
  readDigests: {
    async run(reads, a, o) {
      const vmId = stringOf(a.vmId, 'vmId');
      const diskId = stringOf(a.diskId, 'diskId');
      const algorithm = stringOf(a.algorithm, 'algorithm');
      const hasher = DIGESTS.has(algorithm) ? undefined : await agentHasher(reads, algorithm);
      const blockSize = integerOf(a.blockSize, 'blockSize', 512, MAX_BLOCK_SIZE);
      const { offset, length } = rangeOf(a, MAX_DIGEST_SPAN);
      if (Math.ceil(length / blockSize) > MAX_DIGESTS_PER_FRAME) {
        throw new ProtocolError(`readDigests covers at most ${MAX_DIGESTS_PER_FRAME} blocks`);
      }
      const reader = await reads.reader(vmId, diskId, o);
      inside(reader, offset, length, diskId);
      const digests: Array<string | null> = [];
      for (let at = offset; at < offset + length; at += blockSize) {
        const block = await reader.read(at, Math.min(blockSize, offset + length - at), o);
        if (isZeroBlock(block)) digests.push(null);
        else if (hasher) digests.push(Buffer.from((await hasher.hash([block]))[0]!).toString('hex'));
        else digests.push(createHash(algorithm).update(block).digest('hex'));
      }
      return { digests };
    },
    result(value) {
      const body = objectOf(value, 'readDigests result');
      const list = body.digests;
      if (!Array.isArray(list) || list.length > MAX_DIGESTS_PER_FRAME) {
        throw new ProtocolError('readDigests result.digests must be a list');
      }
      return list.map((d, i) => {
        if (d === null) return null;
        if (typeof d !== 'string' || !/^([0-9a-f]{2}){1,64}$/.test(d)) {
          throw new ProtocolError(`readDigests result.digests[${i}] must be hex or null`);
        }
        return Buffer.from(d, 'hex');
      });
    },
  },
};
