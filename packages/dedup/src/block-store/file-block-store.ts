import { createHash } from 'node:crypto';
import { statSync, writeSync } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  type BackupDiskWriter,
  type BackupSession,
  type BackupSink,
  type BackupVersionInfo,
  type BackupVersionSpec,
  ConflictError,
  FormatError,
  InputError,
  NotFoundError,
  type OperationOptions,
  ReplikitError,
  throwIfAborted,
  toStorageError,
  VerifyError,
} from '@replikit/core';
import { fsyncDirectory, isProcessAlive, SendWindow, writeFileAtomic } from '@replikit/core/internal';
import { BackgroundFlush } from './background-flush.js';
import { BlockTableWriter } from './block-table-writer.js';
import { ChunkAddresser } from './chunk-addresser.js';
import { decodeChunk, encodeChunk, encodeChunkParts } from './chunk-codec.js';
import {
  type KeyCheckRecord,
  keyedAddress,
  newKeyCheck,
  openChunk,
  readKeyFile,
  type StoreKeys,
  sealChunk,
  unlockKeys,
} from './chunk-crypto.js';
import { PACK_MAGIC, RECORD_HEADER_BYTES } from './pack-format.js';
import { PackIndex } from './pack-index.js';
import { PackReader } from './pack-reader.js';
import { PackWriter } from './pack-writer.js';
import { CHUNK_OVERHEAD_BYTES, type RestoreBatch, RestoreBatches } from './restore-batches.js';
import { ADDRESS_BYTES, diskFileName, safeSegment, storePaths } from './store-paths.js';
import { VerifiedChunks } from './verified-chunks.js';

const ZERO_ADDRESS = Buffer.alloc(ADDRESS_BYTES);

interface PendingSpec extends BackupVersionSpec {
  pid: number;
  createdAt: string;
}

/** What {@link FileBlockStore.verify} found. */
export interface VerifyReport {
  /** Chunks the version uses. */
  chunks: number;
  /** Chunks missing or whose content does not match its address. */
  bad: Array<{ address: string; reason: string }>;
}

/** What {@link FileBlockStore.gc} did. */
export interface GcReport {
  kept: number;
  deleted: number;
  bytesFreed: number;
  /** Packs left as they are because a live record in them is damaged (`verify` names it). */
  damaged: number;
  /**
   * Chunks no version names that stay, in packs still mostly in use (a pack is rewritten once less
   * than {@link REPACK_LIVE_FRACTION} of it is in use), and their bytes.
   */
  unused: number;
  unusedBytes: number;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (error instanceof SyntaxError) throw new FormatError(`${path} is not valid JSON`, { cause: error });
    throw toStorageError(error, `reading ${path}`);
  }
}

async function listDir(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw toStorageError(error, `listing ${path}`);
  }
}

/** Block-table entries read at once. */
const TABLE_PAGE_ENTRIES = 32768;

/** Reads a block table page by page: yields `[index of the page's first block, its entries]`. */
async function* readTablePages(path: string, blockCount: number): AsyncIterable<[number, Buffer]> {
  const handle = await open(path, 'r').catch((error: unknown) => {
    throw toStorageError(error, `opening ${path}`);
  });
  try {
    const buffer = Buffer.alloc(TABLE_PAGE_ENTRIES * ADDRESS_BYTES);
    for (let first = 0; first < blockCount; first += TABLE_PAGE_ENTRIES) {
      const count = Math.min(TABLE_PAGE_ENTRIES, blockCount - first);
      const { bytesRead } = await handle.read(buffer, 0, count * ADDRESS_BYTES, first * ADDRESS_BYTES);
      if (bytesRead !== count * ADDRESS_BYTES) throw new FormatError(`${path}: block table is truncated`);
      yield [first, buffer.subarray(0, count * ADDRESS_BYTES)];
    }
  } finally {
    await handle.close();
  }
}

/** Reads a block table page by page: yields `[index, address | null]` for every block. */
async function* readTable(path: string, blockCount: number): AsyncIterable<[number, string | null]> {
  for await (const [first, page] of readTablePages(path, blockCount)) {
    for (let i = 0; i * ADDRESS_BYTES < page.length; i++) {
      const entry = page.subarray(i * ADDRESS_BYTES, (i + 1) * ADDRESS_BYTES);
      yield [first + i, entry.equals(ZERO_ADDRESS) ? null : entry.toString('hex')];
    }
  }
}

/** Options of a {@link FileBlockStore}. */
export interface FileBlockStoreOptions {
  /** Bytes past which a pack is sealed and the next one started. @default 32 MiB */
  packTargetBytes?: number;
  /**
   * A key file (32 bytes, or 64 hex digits, or their base64): the store is encrypted at rest with
   * it (AES-256-GCM per chunk, HMAC-SHA-256 content addresses). A store is encrypted or not from
   * its first use: a key given to a plain store that holds data, no key or the wrong key for an
   * encrypted one, is refused (`E_INPUT`, `E_AUTH`) before anything is written.
   */
  keyFile?: string;
}

/** Batches of decoded chunks a restore keeps at the address check while it decodes the next. */
const RESTORE_BATCHES_IN_FLIGHT = 2;
/** Plain bytes per batch whose addresses a restore checks at once (on the hashing threads). */
const RESTORE_BATCH_BYTES = 4 * 1024 * 1024;
/** Bytes of checked chunks a restore keeps to write again where a later block names them. */
const RESTORE_KEPT_BYTES = 32 * 1024 * 1024;
/** A restore asks the kernel to write back what it wrote every this many bytes, without waiting. */
const RESTORE_FLUSH_BYTES = 64 * 1024 * 1024;

function addressMismatch(address: string): VerifyError {
  return new VerifyError(`chunk ${address} is damaged: its content does not match its address`, {
    details: { address },
  });
}

/** GC rewrites a pack whose live records fill less than this fraction of it. */
export const REPACK_LIVE_FRACTION = 0.5;

class PendingVersion implements BackupSession {
  private readonly tables = new Map<string, BlockTableWriter>();

  constructor(
    private readonly store: FileBlockStore,
    private readonly dir: string,
    private readonly spec: BackupVersionSpec,
    private readonly packs: PackWriter,
  ) {}

  async open(): Promise<void> {
    for (const disk of this.spec.disks) {
      const path = join(this.dir, diskFileName(disk.id));
      const handle = await open(path, 'r+');
      this.tables.set(disk.id, new BlockTableWriter(handle, Math.ceil(disk.size / this.spec.blockSize), disk.id));
    }
  }

  disk(id: string): BackupDiskWriter {
    const table = this.tables.get(id);
    if (!table) throw new NotFoundError(`the backup of run ${this.spec.runId} has no disk '${id}'`);
    return {
      put: async (index, data) => {
        if (!Number.isSafeInteger(index) || index < 0 || index >= table.blockCount) {
          throw new InputError(`block ${index} is outside disk '${id}' (${table.blockCount} blocks)`);
        }
        let address: Buffer = ZERO_ADDRESS;
        if (data) {
          address = this.store.addressOf(data);
          // The chunk is written before put returns (`data` is the caller's buffer, reused after).
          if (!this.store.holds(address.toString('hex'), this.packs))
            await this.packs.append(address, this.store.sealParts(address, data));
        }
        table.set(index, address);
      },
    };
  }

  /** Makes the packs durable (records, then their index entries), then the block tables. */
  async checkpoint(): Promise<void> {
    await this.packs.sync();
    for (const table of this.tables.values()) {
      table.flush();
      await table.handle.datasync();
    }
  }

  async close(): Promise<void> {
    try {
      await this.packs.close();
      for (const table of this.tables.values()) {
        table.flush();
        await table.handle.datasync();
      }
    } finally {
      for (const table of this.tables.values()) await table.handle.close().catch(() => undefined);
      this.tables.clear();
    }
  }
}

/**
 * The content-addressed block store behind single-pass backup. Chunks are blocks addressed by the
 * sha256 of their plain bytes, deflated when it pays, appended as records to pack files under
 * `packs/` (about 32 MiB each, one writer per pack) with an index file per pack; the layout is
 * specified in `docs/block-store.md`. A store written before packs keeps its one-file-per-chunk
 * chunks (`chunks/ab/cd/<address>`): they are read, deduplicated against and collected as they
 * are, never migrated. A version is a JSON manifest (`versions/<vm>/<id>.json`) plus one block
 * table per disk (32 bytes per block, zeros for an all-zero block) in `versions/<vm>/<id>.d/`.
 *
 * Crash safety: a version is written under `pending/` (chunks first; at every checkpoint the
 * packs, then their index files, then the block tables are made durable), then its folder is
 * renamed into `versions/` and the manifest written atomically last: a version exists exactly
 * when its manifest does, and every chunk it names is durable by then. A pack whose writer died
 * mid-record is cut after its last whole record when the store next reads it, and an index file
 * lost or behind its pack is rebuilt from the pack. GC refuses to run while a live writer has a
 * pending version, and keeps every chunk that a pending version (live or crashed) names.
 */
export class FileBlockStore implements BackupSink {
  private readonly paths: ReturnType<typeof storePaths>;
  private readonly index: PackIndex;
  private loaded = false;
  /** The keys of an encrypted store once its key was checked; `null` for a plain store. */
  private keys: StoreKeys | null | undefined;
  /** Whether the store has a one-file-per-chunk `chunks/` folder from before packs. */
  private legacy = false;

  /**
   * @param dir - the store's folder.
   * @param options - `packTargetBytes`: size past which a pack is sealed (default 32 MiB).
   */
  constructor(
    readonly dir: string,
    private readonly options: FileBlockStoreOptions = {},
  ) {
    this.paths = storePaths(dir);
    this.index = new PackIndex(this.paths.packs);
  }

  /**
   * Checks the key against the store's key check record (`key.json`) once, before this store
   * writes or reads anything; for a new store given a key, writes that record.
   */
  private async unlock(): Promise<void> {
    if (this.keys !== undefined) return;
    const recordPath = join(this.dir, 'key.json');
    const record = await readJson<KeyCheckRecord>(recordPath);
    const keyFile = this.options.keyFile;
    if (keyFile === undefined) {
      if (record)
        throw new ReplikitError(
          'E_AUTH',
          `the block store ${this.dir} is encrypted: give the key file it was created with (REPLIKIT_STORE_KEY_FILE)`,
        );
      this.keys = null;
      return;
    }
    const master = await readKeyFile(keyFile);
    if (record) {
      this.keys = unlockKeys(master, record, this.dir, keyFile);
      return;
    }
    const holdsData =
      [this.paths.chunks, this.paths.versions, this.paths.pending].some(
        (path) => statSync(path, { throwIfNoEntry: false }) !== undefined,
      ) || (await listDir(this.paths.packs)).some((name) => name.endsWith('.pack'));
    if (holdsData)
      throw new InputError(
        `the block store ${this.dir} holds unencrypted backups: give an empty folder for an encrypted store, or no key file`,
      );
    const fresh = newKeyCheck(master);
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(recordPath, `${JSON.stringify(fresh.record, null, 2)}\n`);
    this.keys = fresh.keys;
  }

  /**
   * Checks the key (see {@link FileBlockStoreOptions.keyFile}) as a run's `begin` would, so that a
   * run is refused before it snapshots anything; a new store given a key gets its key check record.
   * @throws {@link @replikit/core!ReplikitError} `E_AUTH` or {@link @replikit/core!InputError} as `begin` does.
   */
  async check(options?: OperationOptions): Promise<void> {
    throwIfAborted(options?.signal);
    await this.unlock();
  }

  /** The content address of a block: sha256, or HMAC-SHA-256 under the address key when encrypted. */
  addressOf(plain: Uint8Array): Buffer {
    return this.keys ? keyedAddress(this.keys, plain) : createHash('sha256').update(plain).digest();
  }

  /** A block as stored: encoded (see `encodeChunk`), then encrypted when the store is. */
  seal(address: Buffer, plain: Uint8Array): Uint8Array {
    const encoded = encodeChunk(plain);
    return this.keys ? sealChunk(this.keys, address, encoded) : encoded;
  }

  /**
   * {@link FileBlockStore.seal}'s bytes as consecutive parts: a plain store's raw chunk is its
   * header and `plain` itself (no copy of the block). Used by the store's own sessions.
   *
   * @internal
   */
  sealParts(address: Buffer, plain: Uint8Array): Uint8Array[] {
    return this.keys ? [this.seal(address, plain)] : encodeChunkParts(plain);
  }

  /** Loads (or brings up to date) the index of the packs, and notes a pre-pack `chunks/` folder. */
  private async refresh(): Promise<void> {
    await this.unlock();
    await mkdir(this.paths.packs, { recursive: true }).catch((error: unknown) => {
      throw toStorageError(error, `creating ${this.paths.packs}`);
    });
    await this.index.refresh();
    this.legacy = statSync(this.paths.chunks, { throwIfNoEntry: false }) !== undefined;
    this.loaded = true;
  }

  /** Packs found with a torn tail and cut since this store was created (names). */
  get cutPacks(): readonly string[] {
    return this.index.cut;
  }

  /**
   * Whether the store holds a chunk a writer may rely on: a durable record, one `writer` itself
   * wrote, or a pre-pack chunk file. Used by the store's own sessions, not part of the public API.
   *
   * @internal
   */
  holds(address: string, writer?: PackWriter): boolean {
    const known = this.index.chunks.get(address);
    if (known && (known.synced || writer?.owns(known))) return true;
    return this.legacy && statSync(this.paths.chunk(address), { throwIfNoEntry: false }) !== undefined;
  }

  /** Writes a chunk unless the store holds it, durably; returns whether it was written. */
  async putChunk(address: string, data: Uint8Array): Promise<boolean> {
    if (!this.loaded) await this.refresh();
    if (this.holds(address)) return false;
    const writer = new PackWriter(this.index, this.options.packTargetBytes);
    await writer.append(Buffer.from(address, 'hex'), this.seal(Buffer.from(address, 'hex'), data));
    await writer.close();
    return true;
  }

  /** Reads and checks one chunk: decoded, and its sha256 equals its address. */
  async readChunk(address: string): Promise<Uint8Array> {
    const reader = new PackReader(this.paths.packs);
    try {
      return await this.readWith(reader, address);
    } finally {
      reader.close();
    }
  }

  /** A pre-pack chunk file's bytes, or `undefined` when there is none. */
  private async readLegacy(address: string): Promise<Uint8Array | undefined> {
    try {
      return await readFile(this.paths.chunk(address));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw toStorageError(error, `reading chunk ${address}`);
    }
  }

  private async readWith(reader: PackReader, address: string): Promise<Uint8Array> {
    const plain = await this.decodeWith(reader, address);
    if (this.addressOf(plain).toString('hex') !== address) throw addressMismatch(address);
    return plain;
  }

  /**
   * Reads and decodes one chunk (checksums and, when encrypted, its tag checked), its address not
   * yet. `room`, when given, may offer a place for the chunk's pack record (its header and payload,
   * `bytes` in all) to be read into; a raw chunk's bytes are then returned in place there.
   */
  private async decodeWith(
    reader: PackReader,
    address: string,
    room?: (bytes: number) => Uint8Array | undefined,
  ): Promise<Uint8Array> {
    if (!this.loaded) await this.refresh();
    let location = this.index.chunks.get(address);
    let bytes: Uint8Array | undefined;
    if (!location && this.legacy) bytes = await this.readLegacy(address);
    if (!location && !bytes) {
      await this.refresh(); // another process may have written it since
      location = this.index.chunks.get(address);
    }
    if (location) bytes = reader.payload(address, location, room?.(RECORD_HEADER_BYTES + location.length));
    if (!bytes) throw new NotFoundError(`chunk ${address} is missing`);
    // A pack record's checksum covers exactly the encoded chunk of a plain store: no second CRC.
    const intact = location !== undefined && !this.keys;
    if (this.keys) bytes = openChunk(this.keys, Buffer.from(address, 'hex'), bytes, `chunk ${address}`);
    return decodeChunk(bytes, `chunk ${address}`, intact);
  }

  /**
   * Whether a version of `spec` can inherit from `spec.baseVersion`: it exists, with the same block
   * size and, for every disk of `spec`, a disk of the same id and size, and the store still holds
   * every chunk it names (reads its block tables: 32 bytes per block).
   */
  async canInherit(spec: BackupVersionSpec & { baseVersion: string }, options?: OperationOptions): Promise<boolean> {
    throwIfAborted(options?.signal);
    const base = await this.inheritable(spec, spec.baseVersion);
    if (!base) return false;
    // Every chunk the base names must still be here (a pack lost, a damaged record forgotten):
    // else the blocks a run does not put would name chunks that are gone. A pre-pack store is not
    // checked (a file system look-up per block).
    await this.refresh();
    if (this.legacy) return true;
    for (const disk of base.disks) {
      const table = join(this.paths.versionData(spec.vm, base.id), diskFileName(disk.id));
      // Entry by entry within a page (no await per block); an entry equal to the one before it
      // (runs of zeros, of one repeated block) was just checked.
      for await (const [, page] of readTablePages(table, Math.ceil(disk.size / base.blockSize))) {
        for (let at = 0; at < page.length; at += ADDRESS_BYTES) {
          if (at > 0 && page.compare(page, at - ADDRESS_BYTES, at, at, at + ADDRESS_BYTES) === 0) continue;
          if (page.compare(ZERO_ADDRESS, 0, ADDRESS_BYTES, at, at + ADDRESS_BYTES) === 0) continue;
          if (!this.holds(page.toString('hex', at, at + ADDRESS_BYTES))) return false;
        }
        throwIfAborted(options?.signal);
      }
    }
    return true;
  }

  /** The manifest of `baseVersion` when a version of `spec` can inherit from it. */
  private async inheritable(
    spec: BackupVersionSpec,
    baseVersion: string,
  ): Promise<(BackupVersionInfo & { blockSize: number }) | undefined> {
    const base = await readJson<BackupVersionInfo & { blockSize: number }>(
      this.paths.versionJson(spec.vm, baseVersion),
    ).catch(() => undefined);
    if (!base || base.blockSize !== spec.blockSize) return undefined;
    const same = spec.disks.every((disk) => base.disks.some((d) => d.id === disk.id && d.size === disk.size));
    return same ? base : undefined;
  }

  async begin(spec: BackupVersionSpec, options?: OperationOptions): Promise<BackupSession> {
    throwIfAborted(options?.signal);
    await this.unlock();
    const dir = this.paths.pendingDir(spec.vm, spec.runId);
    try {
      const existing = await readJson<PendingSpec>(join(dir, 'spec.json'));
      if (!existing) {
        // Blocks the run does not put are the base's: a base that cannot give them is refused,
        // never read as zeros (the run's plan asked `canInherit`; the base went since).
        const base = spec.baseVersion ? await this.inheritable(spec, spec.baseVersion) : undefined;
        if (spec.baseVersion && !base) {
          throw new ConflictError(
            `backup version '${spec.baseVersion}', the base of run ${spec.runId}, is gone or has other disks or another block size; run again: the next run records a whole version`,
          );
        }
        await rm(dir, { recursive: true, force: true });
        await mkdir(dir, { recursive: true });
        for (const disk of spec.disks) {
          const table = join(dir, diskFileName(disk.id));
          const blockCount = Math.ceil(disk.size / spec.blockSize);
          if (base) {
            await copyFile(join(this.paths.versionData(spec.vm, base.id), diskFileName(disk.id)), table);
          } else {
            await writeFile(table, '');
            await truncate(table, blockCount * ADDRESS_BYTES);
          }
        }
        await writeFileAtomic(
          join(dir, 'spec.json'),
          JSON.stringify({ ...spec, pid: process.pid, createdAt: new Date().toISOString() } satisfies PendingSpec),
        );
      } else {
        await writeFileAtomic(join(dir, 'spec.json'), JSON.stringify({ ...existing, pid: process.pid }));
      }
      if (await this.gcRunning()) {
        throw new ConflictError('the block store is being garbage-collected; run again when it has finished');
      }
      await this.refresh();
      const session = new PendingVersion(
        this,
        dir,
        existing ?? spec,
        new PackWriter(this.index, this.options.packTargetBytes),
      );
      await session.open();
      return session;
    } catch (error) {
      throw toStorageError(error, `starting the backup version of run ${spec.runId}`);
    }
  }

  async commitPending(vm: string, runId: string): Promise<BackupVersionInfo | undefined> {
    const json = this.paths.versionJson(vm, runId);
    const done = await readJson<BackupVersionInfo & { blockSize: number }>(json);
    if (done) return done;
    const pending = this.paths.pendingDir(vm, runId);
    const data = this.paths.versionData(vm, runId);
    const spec =
      (await readJson<PendingSpec>(join(pending, 'spec.json'))) ??
      (await readJson<PendingSpec>(join(data, 'spec.json')));
    if (!spec) return undefined;
    try {
      if (
        await stat(pending).then(
          () => true,
          () => false,
        )
      ) {
        await mkdir(dirname(data), { recursive: true });
        await rm(data, { recursive: true, force: true });
        await rename(pending, data);
        await fsyncDirectory(dirname(data));
      }
      const info = {
        id: runId,
        vm,
        runId,
        createdAt: new Date().toISOString(),
        blockSize: spec.blockSize,
        disks: spec.disks,
      };
      await writeFileAtomic(json, `${JSON.stringify(info, null, 2)}\n`);
      return info;
    } catch (error) {
      throw toStorageError(error, `committing backup version ${runId}`);
    }
  }

  async abortPending(vm: string, runId: string): Promise<void> {
    await rm(this.paths.pendingDir(vm, runId), { recursive: true, force: true });
  }

  /** The committed versions of a VM, oldest first. */
  async list(vm: string): Promise<BackupVersionInfo[]> {
    const dir = join(this.paths.versions, safeSegment(vm, 'VM'));
    const names = (await listDir(dir)).filter((name) => name.endsWith('.json') && !name.startsWith('.'));
    const versions: BackupVersionInfo[] = [];
    for (const name of names) {
      const info = await readJson<BackupVersionInfo>(join(dir, name));
      if (info) versions.push(info);
    }
    return versions.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** The VMs that have versions. */
  async vms(): Promise<string[]> {
    return (await listDir(this.paths.versions)).filter((name) => !name.startsWith('.'));
  }

  private async manifest(vm: string, id: string): Promise<BackupVersionInfo & { blockSize: number }> {
    const info = await readJson<BackupVersionInfo & { blockSize: number }>(this.paths.versionJson(vm, id));
    if (!info) throw new NotFoundError(`VM '${vm}' has no backup version '${id}'; \`list\` shows them`);
    return info;
  }

  /**
   * Re-hashes every chunk a version uses; reports missing or damaged ones. A damaged record in a
   * pack no live process writes is forgotten (see `PackIndex.forget`), so that the next run that
   * reads its block (`--full` reads them all) stores the chunk again and heals every version naming it.
   */
  async verify(vm: string, id: string, options?: OperationOptions): Promise<VerifyReport> {
    await this.unlock(); // a wrong key is one error, not a report of every chunk as damaged
    const info = await this.manifest(vm, id);
    const seen = new Set<string>();
    const bad: VerifyReport['bad'] = [];
    const reader = new PackReader(this.paths.packs);
    try {
      for (const disk of info.disks) {
        const table = join(this.paths.versionData(vm, id), diskFileName(disk.id));
        for await (const [, address] of readTable(table, Math.ceil(disk.size / info.blockSize))) {
          if (!address || seen.has(address)) continue;
          seen.add(address);
          throwIfAborted(options?.signal);
          try {
            await this.readWith(reader, address);
          } catch (error) {
            let reason = (error as Error).message;
            // A damaged record is forgotten: a run that reads the block again stores it anew.
            if ((error instanceof FormatError || error instanceof VerifyError) && (await this.index.forget(address))) {
              reason += '; forgotten: a run that reads this block again (`replikit run --full`) stores it anew';
            }
            bad.push({ address, reason });
          }
        }
      }
    } finally {
      reader.close();
    }
    return { chunks: seen.size, bad };
  }

  /**
   * Writes one disk of a version as a raw image at `outPath` (sparse: zero blocks are holes),
   * checking every chunk on the way.
   * @throws {@link @replikit/core!VerifyError} when a chunk is damaged, {@link @replikit/core!NotFoundError} when missing.
   */
  async restore(vm: string, id: string, diskId: string, outPath: string, options?: OperationOptions): Promise<void> {
    const info = await this.manifest(vm, id);
    const disk = info.disks.find((d) => d.id === diskId);
    if (!disk)
      throw new NotFoundError(
        `version '${id}' has no disk '${diskId}' (it has ${info.disks.map((d) => d.id).join(', ')})`,
      );
    const table = join(this.paths.versionData(vm, id), diskFileName(disk.id));
    if ((await stat(outPath).catch(() => undefined))?.isDirectory()) {
      throw new InputError(`${outPath} is a folder: give the path of the raw image file to restore into`);
    }
    const temp = `${outPath}.restoring`;
    if (!this.loaded) await this.refresh(); // unlocks the keys the address check needs
    const reader = new PackReader(this.paths.packs);
    const checks = new SendWindow(RESTORE_BATCHES_IN_FLIGHT);
    const handle = await open(temp, 'w').catch((error: unknown) => {
      throw toStorageError(error, `creating ${temp}`);
    });
    const flush = new BackgroundFlush(handle, RESTORE_FLUSH_BYTES);
    let addresser: ChunkAddresser | undefined;
    try {
      await handle.truncate(disk.size);
      addresser = await ChunkAddresser.open(this.keys ?? null);
      const check = addresser;
      // Chunks are read and decoded here into batch buffers (shared with the hashing threads, so
      // that they hash the blocks where they lie); a batch's addresses are computed on the threads
      // while the next batch is read, and its blocks are written once they passed (synchronous
      // positional writes: the file is ours). A batch buffer is reused once its batch is written.
      // A chunk checked once is kept for a while (`VerifiedChunks`): a later block naming it is
      // written from that copy, not read, decoded and hashed again.
      const batches = new RestoreBatches(
        RESTORE_BATCH_BYTES + info.blockSize + RECORD_HEADER_BYTES + CHUNK_OVERHEAD_BYTES,
        RESTORE_BATCHES_IN_FLIGHT + 1,
        (bytes) => check.allocate(bytes),
      );
      const verified = new VerifiedChunks(RESTORE_KEPT_BYTES);
      const writeChecked = async (batch: RestoreBatch) => {
        try {
          const addresses = await check.addressesOf(batch.chunks.map((chunk) => chunk.plain));
          for (let i = 0; i < batch.chunks.length; i++) {
            const { index, plain, address } = batch.chunks[i]!;
            if (Buffer.from(addresses[i]!).toString('hex') !== address) throw addressMismatch(address);
            writeSync(handle.fd, plain, 0, plain.length, index * info.blockSize);
            flush.wrote(plain.length);
            verified.remember(address, plain);
          }
        } finally {
          batches.release(batch);
        }
      };
      let batch = batches.take();
      for await (const [index, address] of readTable(table, Math.ceil(disk.size / info.blockSize))) {
        if (!address) continue;
        throwIfAborted(options?.signal);
        const known = verified.get(address);
        if (known) {
          writeSync(handle.fd, known, 0, known.length, index * info.blockSize);
          flush.wrote(known.length);
          continue;
        }
        batch.add(index, address, await this.decodeWith(reader, address, (bytes) => batch.room(bytes, info.blockSize)));
        if (batch.bytes < RESTORE_BATCH_BYTES) continue;
        const full = batch;
        await checks.start(() => writeChecked(full));
        batch = batches.take();
      }
      if (batch.chunks.length > 0) {
        const last = batch;
        await checks.start(() => writeChecked(last));
      } else batches.release(batch);
      await checks.drain();
      await flush.settle();
      await handle.sync();
    } catch (error) {
      reader.close();
      // No check may write through the descriptor once it is closed (its number could be reused).
      await checks.drain().catch(() => undefined);
      await flush.settle().catch(() => undefined);
      await handle.close().catch(() => undefined);
      await addresser?.close().catch(() => undefined);
      await rm(temp, { force: true });
      throw toStorageError(error, `restoring disk '${diskId}' of version ${id}`);
    }
    await addresser.close();
    reader.close();
    await handle.close();
    await rename(temp, outPath).catch(async (error: unknown) => {
      await rm(temp, { force: true });
      throw toStorageError(error, `renaming ${temp} to ${outPath}`);
    });
  }

  /** Deletes a version (its chunks stay until {@link FileBlockStore.gc}). */
  async delete(vm: string, id: string): Promise<void> {
    await this.manifest(vm, id);
    await rm(this.paths.versionJson(vm, id));
    await rm(this.paths.versionData(vm, id), { recursive: true, force: true });
  }

  private async gcRunning(): Promise<boolean> {
    const holder = await readJson<{ pid: number }>(this.paths.gcLock).catch(() => undefined);
    return holder !== undefined && holder.pid !== process.pid && isProcessAlive(holder.pid);
  }

  /**
   * Deletes the chunks no version and no pending version names. Refuses (`E_CONFLICT`) while a
   * live process writes a version.
   */
  async gc(options?: OperationOptions): Promise<GcReport> {
    await this.unlock();
    await mkdir(this.dir, { recursive: true });
    if (await this.gcRunning()) throw new ConflictError('another garbage collection is running');
    await writeFileAtomic(this.paths.gcLock, JSON.stringify({ pid: process.pid }));
    try {
      const live = new Set<string>();
      const tables: Array<{ path: string; blockCount: number }> = [];
      for (const vm of await listDir(this.paths.pending)) {
        for (const runId of await listDir(join(this.paths.pending, vm))) {
          const dir = join(this.paths.pending, vm, runId);
          const spec = await readJson<PendingSpec>(join(dir, 'spec.json'));
          if (!spec) continue;
          if (isProcessAlive(spec.pid) && spec.pid !== process.pid) {
            throw new ConflictError(`run ${runId} is writing a backup version; collect garbage when it has finished`);
          }
          for (const disk of spec.disks) {
            tables.push({ path: join(dir, diskFileName(disk.id)), blockCount: Math.ceil(disk.size / spec.blockSize) });
          }
        }
      }
      for (const vm of await this.vms()) {
        for (const version of await this.list(vm)) {
          const info = await this.manifest(vm, version.id);
          for (const disk of info.disks) {
            tables.push({
              path: join(this.paths.versionData(vm, info.id), diskFileName(disk.id)),
              blockCount: Math.ceil(disk.size / info.blockSize),
            });
          }
        }
      }
      for (const table of tables) {
        for await (const [, address] of readTable(table.path, table.blockCount)) if (address) live.add(address);
      }
      const report: GcReport = { kept: 0, deleted: 0, bytesFreed: 0, damaged: 0, unused: 0, unusedBytes: 0 };
      await this.collectPacks(live, report, options);
      for (const a of await listDir(this.paths.chunks)) {
        for (const b of await listDir(join(this.paths.chunks, a))) {
          const dir = join(this.paths.chunks, a, b);
          for (const name of await listDir(dir)) {
            throwIfAborted(options?.signal);
            if (live.has(name)) {
              report.kept++;
              continue;
            }
            const path = join(dir, name);
            report.bytesFreed += (await stat(path)).size;
            await rm(path, { force: true });
            report.deleted++;
          }
        }
      }
      return report;
    } finally {
      await rm(this.paths.gcLock, { force: true });
    }
  }

  /**
   * Deletes the packs that hold no live chunk and rewrites those whose live records fill less than
   * {@link REPACK_LIVE_FRACTION} of them: their live records are copied into new packs, made
   * durable, and only then the old packs deleted (a crash in between leaves duplicates, never a
   * loss). A record is live when a version names its chunk and it is the record the index serves.
   */
  private async collectPacks(live: ReadonlySet<string>, report: GcReport, options?: OperationOptions): Promise<void> {
    await this.refresh();
    const reader = new PackReader(this.paths.packs);
    let writer: PackWriter | undefined;
    const doomed: string[] = [];
    let copied = 0;
    try {
      for (const [name, pack] of [...this.index.packs]) {
        if (this.index.active.has(name)) continue;
        throwIfAborted(options?.signal);
        const kept = pack.records.filter(
          (record) => live.has(record.address) && this.index.chunks.get(record.address)?.pack === name,
        );
        const liveBytes = kept.reduce((sum, record) => sum + RECORD_HEADER_BYTES + record.length, 0);
        report.kept += kept.length;
        if (liveBytes >= REPACK_LIVE_FRACTION * pack.covered) {
          report.unused += pack.records.length - kept.length;
          report.unusedBytes += pack.covered - PACK_MAGIC.length - liveBytes;
          continue;
        }
        // Every live record is read (and checked) before any is copied: a pack holding a damaged
        // live record stays as it is, for `verify` to report, and the other packs are collected.
        const payloads: Buffer[] = [];
        try {
          for (const record of kept) payloads.push(reader.payload(record.address, { pack: name, ...record }));
        } catch (error) {
          if (!(error instanceof FormatError)) throw error;
          report.damaged++;
          continue;
        }
        report.deleted += pack.records.length - kept.length;
        for (const [i, record] of kept.entries()) {
          const payload = payloads[i]!;
          this.index.chunks.delete(record.address);
          writer ??= new PackWriter(this.index, this.options.packTargetBytes);
          await writer.append(Buffer.from(record.address, 'hex'), payload);
          copied += RECORD_HEADER_BYTES + payload.length;
        }
        doomed.push(name);
      }
      if (writer) await writer.close();
    } finally {
      reader.close();
    }
    for (const name of doomed) {
      const path = join(this.paths.packs, name);
      report.bytesFreed += (await stat(path)).size;
      await rm(path, { force: true });
      await rm(`${path}.idx`, { force: true });
      this.index.drop(name);
    }
    report.bytesFreed -= copied;
    if (doomed.length > 0) await fsyncDirectory(this.paths.packs);
  }
}
