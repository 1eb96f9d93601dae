import { closeSync, fdatasyncSync, fstatSync, ftruncateSync, openSync, readSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { toStorageError } from '@replikit/core';
import { isProcessAlive, writeFileAtomic } from '@replikit/core/internal';
import {
  type ChunkLocation,
  indexEntry,
  PACK_MAGIC,
  parseIndex,
  parseRecordHeader,
  payloadIntact,
  RECORD_HEADER_BYTES,
} from './pack-format.js';

/** A record of a pack: the chunk it holds and where. */
export interface PackRecord {
  address: string;
  offset: number;
  length: number;
}

/** The pid that wrote a pack, from its name `p-<time>-<pid>-<random>.pack`. */
export function packOwner(name: string): number | undefined {
  const pid = Number(name.split('-')[2]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * The store's view of its packs: which chunk lies where. Built from each pack's index file
 * (`<pack>.idx`) and, past the end of what that file covers (a stale or lost index), by scanning
 * the pack's records. A record that is torn (its header or payload CRC does not match, or it runs
 * past the file's end) ends the pack: when the pack's writer is dead the file is cut there and its
 * index file rewritten from the records before it.
 */
export class PackIndex {
  /** Every known chunk: the first record found holding it, and whether that record is durable. */
  readonly chunks = new Map<string, ChunkLocation & { synced: boolean; writer?: object }>();
  /** The records of each pack, in file order, and the bytes of the pack they cover. */
  readonly packs = new Map<string, { records: PackRecord[]; covered: number }>();
  /** Packs a writer of this process is appending to: never scanned or cut. */
  readonly active = new Set<string>();
  /** Packs found torn and cut on load (for tests and reports). */
  readonly cut: string[] = [];

  constructor(readonly dir: string) {}

  /** Records a chunk in a pack (first location wins). */
  add(pack: string, record: PackRecord, synced: boolean, writer?: object): void {
    let entry = this.packs.get(pack);
    if (!entry) {
      entry = { records: [], covered: PACK_MAGIC.length };
      this.packs.set(pack, entry);
    }
    entry.records.push(record);
    entry.covered = Math.max(entry.covered, record.offset + RECORD_HEADER_BYTES + record.length);
    const known = this.chunks.get(record.address);
    if (!known || (!known.synced && synced && known.writer !== writer)) {
      this.chunks.set(record.address, { pack, offset: record.offset, length: record.length, synced, writer });
    }
  }

  /** Forgets a pack (after GC removed it). */
  drop(pack: string): void {
    const entry = this.packs.get(pack);
    if (!entry) return;
    for (const record of entry.records) {
      if (this.chunks.get(record.address)?.pack === pack) this.chunks.delete(record.address);
    }
    this.packs.delete(pack);
  }

  /** Reads every pack not yet known or grown since; cuts torn tails of dead writers' packs. */
  async refresh(): Promise<void> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((name) => name.endsWith('.pack'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw toStorageError(error, `listing ${this.dir}`);
    }
    for (const name of names.sort()) {
      if (this.active.has(name)) continue;
      await this.load(name);
    }
  }

  private async load(name: string): Promise<void> {
    const path = join(this.dir, name);
    let fd: number;
    try {
      fd = openSync(path, 'r+');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw toStorageError(error, `opening pack ${path}`);
    }
    try {
      const size = fstatSync(fd).size;
      const known = this.packs.get(name);
      if (known && known.covered >= size) return;
      let indexed = 0;
      if (!known) {
        const bytes = await readFile(`${path}.idx`).catch(() => Buffer.alloc(0));
        let end = PACK_MAGIC.length;
        for (const entry of parseIndex(bytes)) {
          // An entry must follow the previous one exactly and lie inside the pack; else stop there.
          if (entry.offset !== end || entry.offset + RECORD_HEADER_BYTES + entry.length > size) break;
          this.add(name, entry, true);
          end = entry.offset + RECORD_HEADER_BYTES + entry.length;
          indexed++;
        }
        if (!this.packs.has(name)) this.packs.set(name, { records: [], covered: PACK_MAGIC.length });
      }
      const entry = this.packs.get(name)!;
      const magic = Buffer.alloc(PACK_MAGIC.length);
      if (readSync(fd, magic, 0, magic.length, 0) !== magic.length || !magic.equals(PACK_MAGIC)) {
        entry.covered = size; // not a pack of ours: ignore it
        return;
      }
      const owner = packOwner(name);
      const dead = owner === undefined || (owner !== process.pid && !isProcessAlive(owner));
      // Records past the index of a live writer may not be durable yet: never relied on (a writer
      // here writes its own copy); those of a dead writer are made durable below.
      const scanned = this.scan(fd, name, entry.covered, size, dead);
      if (scanned.end < size && dead) {
        ftruncateSync(fd, scanned.end);
        this.cut.push(name);
      }
      if (dead && scanned.added > 0) fdatasyncSync(fd);
      if (dead && (scanned.added > 0 || entry.records.length !== indexed)) {
        const rebuilt = Buffer.concat(
          entry.records.map((r) => indexEntry(Buffer.from(r.address, 'hex'), r.offset, r.length)),
        );
        await writeFileAtomic(`${path}.idx`, rebuilt);
      }
    } finally {
      closeSync(fd);
    }
  }

  /** Adds the whole, intact records from `from` on; returns where they end. */
  private scan(fd: number, name: string, from: number, size: number, synced: boolean): { end: number; added: number } {
    const header = Buffer.alloc(RECORD_HEADER_BYTES);
    let at = from;
    let added = 0;
    while (at + RECORD_HEADER_BYTES <= size) {
      if (readSync(fd, header, 0, RECORD_HEADER_BYTES, at) !== RECORD_HEADER_BYTES) break;
      const parsed = parseRecordHeader(header);
      if (!parsed || at + RECORD_HEADER_BYTES + parsed.length > size) break;
      const payload = Buffer.alloc(parsed.length);
      if (readSync(fd, payload, 0, parsed.length, at + RECORD_HEADER_BYTES) !== parsed.length) break;
      if (!payloadIntact(payload, parsed.payloadCrc)) break;
      this.add(name, { address: parsed.address, offset: at, length: parsed.length }, synced);
      at += RECORD_HEADER_BYTES + parsed.length;
      added++;
    }
    const entry = this.packs.get(name);
    if (entry) entry.covered = at;
    return { end: at, added };
  }
}
