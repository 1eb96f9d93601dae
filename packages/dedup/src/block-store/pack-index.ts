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
  RECORD_MAGIC_BYTES,
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
 * the pack's records. A record that is not whole (its header or payload CRC does not match, or it
 * runs past the file's end) is skipped when a whole record follows it (damage inside the pack);
 * otherwise it is the pack's torn tail: when the pack's writer is dead the file is cut there and
 * its index file rewritten from the whole records.
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

  /**
   * Forgets the record serving `address`, found damaged, when its pack's writer is dead: the pack's
   * index file is rewritten without it (a gap the pack's next load accepts), so that the store no
   * longer holds the chunk and the next run that reads the block stores it anew. Another record of
   * the same chunk, if a pack holds one, serves it from then on. Returns whether it was forgotten.
   */
  async forget(address: string): Promise<boolean> {
    const known = this.chunks.get(address);
    const entry = known && this.packs.get(known.pack);
    if (!known || !entry || this.active.has(known.pack)) return false;
    const owner = packOwner(known.pack);
    if (owner !== undefined && (owner === process.pid || isProcessAlive(owner))) return false;
    const records = entry.records.filter((r) => r.offset !== known.offset);
    const path = join(this.dir, known.pack);
    await writeFileAtomic(
      `${path}.idx`,
      Buffer.concat(records.map((r) => indexEntry(Buffer.from(r.address, 'hex'), r.offset, r.length))),
    );
    entry.records = records;
    this.chunks.delete(address);
    for (const [pack, other] of this.packs) {
      const copy = other.records.find((r) => r.address === address);
      if (copy) {
        this.chunks.set(address, { pack, offset: copy.offset, length: copy.length, synced: true });
        break;
      }
    }
    return true;
  }

  /**
   * Reads every pack not yet known or grown since, and forgets packs gone since; cuts torn tails
   * of dead writers' packs.
   */
  async refresh(): Promise<void> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((name) => name.endsWith('.pack'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw toStorageError(error, `listing ${this.dir}`);
    }
    // A pack gone since (collected or repacked by another process's gc, lost): what this index
    // knows may name chunks that no longer exist, or miss their new copies. Reload every pack.
    const present = new Set(names);
    if ([...this.packs.keys()].some((name) => !present.has(name) && !this.active.has(name))) {
      for (const name of [...this.packs.keys()]) if (!this.active.has(name)) this.packs.delete(name);
      for (const [address, location] of [...this.chunks]) {
        if (!this.active.has(location.pack)) this.chunks.delete(address);
      }
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
          // An entry must start at or after the end of the previous one (a gap is a damaged record
          // the scan skipped) and lie inside the pack; else stop there.
          if (entry.offset < end || entry.offset + RECORD_HEADER_BYTES + entry.length > size) break;
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

  /**
   * Adds the whole, intact records from `from` on; returns where the last one ends. A record that
   * is not whole is skipped when a whole record follows it (damage inside the pack: the records
   * after it are kept); with none after it, it is the pack's torn tail and the scan ends there.
   */
  private scan(fd: number, name: string, from: number, size: number, synced: boolean): { end: number; added: number } {
    let at = from;
    let added = 0;
    while (at + RECORD_HEADER_BYTES <= size) {
      const record = readWholeRecord(fd, at, size);
      if (!record) {
        const next = nextWholeRecord(fd, at + 1, size);
        if (next === undefined) break;
        at = next;
        continue;
      }
      this.add(name, { address: record.address, offset: at, length: record.length }, synced);
      at += RECORD_HEADER_BYTES + record.length;
      added++;
    }
    const entry = this.packs.get(name);
    if (entry) entry.covered = at;
    return { end: at, added };
  }
}

/** The record at `at` when it is whole (header and payload intact, inside the file), else `undefined`. */
function readWholeRecord(fd: number, at: number, size: number): { address: string; length: number } | undefined {
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  if (readSync(fd, header, 0, RECORD_HEADER_BYTES, at) !== RECORD_HEADER_BYTES) return undefined;
  const parsed = parseRecordHeader(header);
  if (!parsed || at + RECORD_HEADER_BYTES + parsed.length > size) return undefined;
  const payload = Buffer.alloc(parsed.length);
  if (readSync(fd, payload, 0, parsed.length, at + RECORD_HEADER_BYTES) !== parsed.length) return undefined;
  return payloadIntact(payload, parsed.payloadCrc) ? parsed : undefined;
}

/** Bytes searched at once for the next record's magic. */
const SEARCH_BYTES = 1024 * 1024;

/** The offset of the first whole record at or after `from`, or `undefined` when none follows. */
function nextWholeRecord(fd: number, from: number, size: number): number | undefined {
  const window = Buffer.alloc(SEARCH_BYTES);
  for (let start = from; start + RECORD_HEADER_BYTES <= size; start += SEARCH_BYTES - RECORD_MAGIC_BYTES.length + 1) {
    const read = readSync(fd, window, 0, Math.min(SEARCH_BYTES, size - start), start);
    let hit = window.subarray(0, read).indexOf(RECORD_MAGIC_BYTES);
    while (hit >= 0) {
      if (readWholeRecord(fd, start + hit, size)) return start + hit;
      hit = window.subarray(0, read).indexOf(RECORD_MAGIC_BYTES, hit + 1);
    }
    if (start + read >= size) break;
  }
  return undefined;
}
