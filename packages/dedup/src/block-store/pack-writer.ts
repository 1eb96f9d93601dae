import { randomBytes } from 'node:crypto';
import { closeSync, fdatasync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { toStorageError } from '@replikit/core';
import { fsyncDirectory } from '@replikit/core/internal';
import { indexEntry, PACK_MAGIC, RECORD_HEADER_BYTES, recordHeaderOf } from './pack-format.js';
import type { PackIndex } from './pack-index.js';
import { writeAll } from './write-all.js';

const datasync = promisify(fdatasync);

/** Sealed packs whose sync may run in the background before an append waits for the oldest. */
const SEALED_IN_FLIGHT = 4;

/** Bytes after which a pack is sealed and the next one started. */
export const PACK_TARGET_BYTES = 32 * 1024 * 1024;

interface OpenPack {
  name: string;
  fd: number;
  indexFd: number;
  size: number;
  /** Index entries of records written and not yet made durable. */
  unsynced: Buffer[];
  addresses: string[];
}

/**
 * Appends chunks to pack files of its own (`p-<time>-<pid>-<random>.pack`, never shared with
 * another writer), starting a new pack past {@link PACK_TARGET_BYTES}. {@link PackWriter.sync}
 * makes the packs durable first and their index files second, so an index entry never names a
 * record that a crash could lose.
 */
export class PackWriter {
  private current: OpenPack | undefined;
  /** Sealed packs whose sync runs in the background. */
  private sealing: Array<{ pack: OpenPack; done: Promise<void> }> = [];
  /** The first failure of a sync, thrown at the next append or sync. */
  private failure: unknown;
  private newFiles = false;

  constructor(
    private readonly index: PackIndex,
    private readonly target = PACK_TARGET_BYTES,
  ) {}

  /**
   * Appends one encoded chunk, given whole or as consecutive parts (written as they are, with
   * one system call and no copy); records it in the index as not yet durable.
   */
  async append(address: Buffer, payload: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.current && this.current.size >= this.target) {
      // Sealed: its sync runs in the background while the next pack fills (a sync waits behind
      // the file system's writeback, which a run's replica writes keep busy).
      const sealed = this.current;
      this.current = undefined;
      this.sealing.push({ pack: sealed, done: this.flush(sealed) });
      while (this.sealing.length > SEALED_IN_FLIGHT) {
        const oldest = this.sealing.shift()!;
        await oldest.done;
        this.release(oldest.pack);
      }
      this.throwIfFailed();
    }
    const pack = this.current ?? this.open();
    const parts = payload instanceof Uint8Array ? [payload] : payload;
    const header = recordHeaderOf(address, parts);
    const length = parts.reduce((sum, part) => sum + part.length, 0);
    const offset = pack.size;
    try {
      writeAll(pack.fd, [header, ...parts], RECORD_HEADER_BYTES + length, offset);
    } catch (error) {
      throw toStorageError(error, `appending chunk ${address.toString('hex')} to pack ${pack.name}`);
    }
    pack.size += RECORD_HEADER_BYTES + length;
    pack.unsynced.push(indexEntry(address, offset, length));
    const hex = address.toString('hex');
    pack.addresses.push(hex);
    this.index.add(pack.name, { address: hex, offset, length }, false, this);
  }

  /** True when `address` was written by this writer (durable or not). */
  owns(location: { writer?: object }): boolean {
    return location.writer === this;
  }

  private open(): OpenPack {
    const name = `p-${Date.now().toString(36).padStart(9, '0')}-${process.pid}-${randomBytes(4).toString('hex')}.pack`;
    const path = join(this.index.dir, name);
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, PACK_MAGIC, 0, PACK_MAGIC.length, 0);
      const indexFd = openSync(`${path}.idx`, 'w');
      this.current = { name, fd, indexFd, size: PACK_MAGIC.length, unsynced: [], addresses: [] };
    } catch (error) {
      throw toStorageError(error, `creating pack ${path}`);
    }
    this.index.active.add(name);
    this.newFiles = true;
    return this.current;
  }

  /** Makes one pack's records written so far durable, then their index entries. */
  private async flush(pack: OpenPack): Promise<void> {
    const entries = pack.unsynced;
    const addresses = pack.addresses;
    pack.unsynced = [];
    pack.addresses = [];
    try {
      await datasync(pack.fd);
      if (entries.length > 0) {
        const bytes = Buffer.concat(entries);
        writeSync(pack.indexFd, bytes, 0, bytes.length);
        await datasync(pack.indexFd);
      }
    } catch (error) {
      this.failure ??= error;
      return;
    }
    for (const address of addresses) {
      const known = this.index.chunks.get(address);
      if (known?.pack === pack.name) known.synced = true;
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw toStorageError(this.failure, 'syncing the pack files of a backup version');
  }

  /** Makes every record appended so far durable: packs first, then their index entries. */
  async sync(): Promise<void> {
    const sealing = this.sealing;
    this.sealing = [];
    await Promise.all([...sealing.map((s) => s.done), ...(this.current ? [this.flush(this.current)] : [])]);
    for (const { pack } of sealing) this.release(pack);
    this.throwIfFailed();
    if (this.newFiles) {
      this.newFiles = false;
      try {
        await fsyncDirectory(this.index.dir);
      } catch (error) {
        throw toStorageError(error, 'syncing the pack folder of a backup version');
      }
    }
  }

  private release(pack: OpenPack): void {
    closeSync(pack.fd);
    closeSync(pack.indexFd);
    this.index.active.delete(pack.name);
  }

  /** Syncs and closes every pack. */
  async close(): Promise<void> {
    try {
      await this.sync();
    } finally {
      for (const pack of [...this.sealing.map((s) => s.pack), ...(this.current ? [this.current] : [])]) {
        try {
          this.release(pack);
        } catch {
          // already closed
        }
      }
      this.sealing = [];
      this.current = undefined;
    }
  }
}
