import { randomBytes } from 'node:crypto';
import { closeSync, fdatasync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fsyncDirectory, toStorageError } from '@replikit/core';
import { indexEntry, PACK_MAGIC, RECORD_HEADER_BYTES, recordHeader } from './pack-format.js';
import type { PackIndex } from './pack-index.js';

const datasync = promisify(fdatasync);

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
  /** Sealed packs whose last records still await a sync. */
  private sealing: OpenPack[] = [];
  private newFiles = false;

  constructor(
    private readonly index: PackIndex,
    private readonly target = PACK_TARGET_BYTES,
  ) {}

  /** Appends one encoded chunk; records it in the index as not yet durable. */
  async append(address: Buffer, payload: Uint8Array): Promise<void> {
    if (this.current && this.current.size >= this.target) {
      this.sealing.push(this.current);
      this.current = undefined;
      await this.sync();
    }
    const pack = this.current ?? this.open();
    const header = recordHeader(address, payload);
    const offset = pack.size;
    try {
      writeSync(pack.fd, Buffer.concat([header, payload]), 0, RECORD_HEADER_BYTES + payload.length, offset);
    } catch (error) {
      throw toStorageError(error, `appending chunk ${address.toString('hex')} to pack ${pack.name}`);
    }
    pack.size += RECORD_HEADER_BYTES + payload.length;
    pack.unsynced.push(indexEntry(address, offset, payload.length));
    const hex = address.toString('hex');
    pack.addresses.push(hex);
    this.index.add(pack.name, { address: hex, offset, length: payload.length }, false, this);
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

  /** Makes every record appended so far durable: packs first, then their index entries. */
  async sync(): Promise<void> {
    const packs = [...this.sealing, ...(this.current ? [this.current] : [])];
    const work = packs.map((pack) => ({ pack, entries: pack.unsynced, addresses: pack.addresses }));
    for (const pack of packs) {
      pack.unsynced = [];
      pack.addresses = [];
    }
    try {
      await Promise.all(work.map(({ pack }) => datasync(pack.fd)));
      for (const { pack, entries } of work) {
        if (entries.length === 0) continue;
        const bytes = Buffer.concat(entries);
        writeSync(pack.indexFd, bytes, 0, bytes.length);
      }
      await Promise.all(work.map(({ pack, entries }) => (entries.length ? datasync(pack.indexFd) : undefined)));
      if (this.newFiles) {
        this.newFiles = false;
        await fsyncDirectory(this.index.dir);
      }
    } catch (error) {
      throw toStorageError(error, 'syncing the pack files of a backup version');
    }
    for (const { pack, addresses } of work) {
      for (const address of addresses) {
        const known = this.index.chunks.get(address);
        if (known?.pack === pack.name) known.synced = true;
      }
    }
    for (const pack of this.sealing) this.release(pack);
    this.sealing = [];
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
      for (const pack of [...this.sealing, ...(this.current ? [this.current] : [])]) {
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
