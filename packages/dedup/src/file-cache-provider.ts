import { createHash } from 'node:crypto';
import { type FileHandle, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type BlockDigest,
  type CacheExpectation,
  type CacheKey,
  type CacheOpenResult,
  type CacheReader,
  type CacheWriter,
  FormatError,
  InputError,
  type OperationOptions,
  type ReplicationCacheProvider,
  throwIfAborted,
  toStorageError,
} from '@replikit/core';
import { fsyncDirectory } from '@replikit/core/internal';
import {
  CACHE_HEADER_BYTES,
  CACHE_TRAILER_BYTES,
  CACHE_VERSION,
  decodeHeader,
  encodeHeader,
  hashFileRange,
  hashFingerprint,
  openIfExists,
} from './cache-file.js';
import { asDigestKind, DIGEST_IDS, DIGEST_LENGTH } from './digest-kinds.js';

const PAGE_BYTES = 1024 * 1024;

function fileName(diskId: string): string {
  return /^[A-Za-z0-9_-]{1,100}$/.test(diskId)
    ? diskId
    : `disk-${createHash('sha256').update(diskId).digest('hex').slice(0, 32)}`;
}

function checkName(name: string, what: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/.test(name) || name.includes('..')) {
    throw new InputError(`${what} '${name}' cannot name a cache file`);
  }
  return name;
}

function isZero(bytes: Uint8Array): boolean {
  for (const byte of bytes) if (byte !== 0) return false;
  return true;
}

/** Pages of digests kept by {@link FileCacheReader.digestAt} (64 KiB each). */
const RANDOM_PAGES = 16;
const RANDOM_PAGE_BYTES = 64 * 1024;

class FileCacheReader implements CacheReader {
  private readonly pages = new Map<number, Buffer>();

  constructor(
    readonly handle: FileHandle,
    private readonly path: string,
    readonly digestLength: number,
    readonly blockCount: number,
  ) {}

  async digestAt(index: number, options?: OperationOptions): Promise<Uint8Array | null> {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.blockCount) {
      throw new InputError(`cache entry ${index} is outside the cache's ${this.blockCount} blocks`);
    }
    const perPage = Math.floor(RANDOM_PAGE_BYTES / this.digestLength);
    const pageNo = Math.floor(index / perPage);
    let page = this.pages.get(pageNo);
    if (page) {
      this.pages.delete(pageNo); // most recently used goes last
    } else {
      throwIfAborted(options?.signal);
      const first = pageNo * perPage;
      const length = Math.min(perPage, this.blockCount - first) * this.digestLength;
      page = Buffer.allocUnsafe(length);
      await this.readExactly(page, CACHE_HEADER_BYTES + first * this.digestLength);
      if (this.pages.size >= RANDOM_PAGES) this.pages.delete(this.pages.keys().next().value!);
    }
    this.pages.set(pageNo, page);
    const at = (index - pageNo * perPage) * this.digestLength;
    const digest = page.subarray(at, at + this.digestLength);
    return isZero(digest) ? null : Uint8Array.from(digest);
  }

  /** A window of the file's digests kept for {@link FileCacheReader.copyEntries}. */
  private window: { first: number; count: number; bytes: Buffer } | undefined;

  /**
   * Copies the raw entries `[index, index + count)` into `target`, through a 1 MiB window read
   * ahead (a bulk carry walks the file forward: one read per MiB of entries).
   */
  async copyEntries(target: Uint8Array, index: number, count: number): Promise<void> {
    if (!Number.isSafeInteger(index) || !Number.isSafeInteger(count) || index < 0 || count < 0) {
      throw new InputError(`cache entries ${index}+${count} are not a valid range`);
    }
    if (index + count > this.blockCount || count * this.digestLength > target.length) {
      throw new InputError(
        `cache entries ${index}–${index + count} do not fit the cache's ${this.blockCount} blocks or the target`,
      );
    }
    let done = 0;
    while (done < count) {
      const at = index + done;
      let window = this.window;
      if (!window || at < window.first || at >= window.first + window.count) {
        const perWindow = Math.floor(PAGE_BYTES / this.digestLength);
        const windowCount = Math.min(perWindow, this.blockCount - at);
        const bytes =
          window?.bytes.length === windowCount * this.digestLength
            ? window.bytes
            : Buffer.allocUnsafe(windowCount * this.digestLength);
        await this.readExactly(bytes, CACHE_HEADER_BYTES + at * this.digestLength);
        window = { first: at, count: windowCount, bytes };
        this.window = window;
      }
      const take = Math.min(count - done, window.first + window.count - at);
      const from = (at - window.first) * this.digestLength;
      target.set(window.bytes.subarray(from, from + take * this.digestLength), done * this.digestLength);
      done += take;
    }
  }

  /** Fills `buffer` from file position `position`; a short read means the file was truncated. */
  async readExactly(buffer: Buffer, position: number): Promise<void> {
    const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, position).catch((error: unknown) => {
      throw toStorageError(error, `reading ${this.path}`);
    });
    if (bytesRead !== buffer.length) throw new FormatError(`${this.path}: truncated while reading`);
  }

  async *digests(fromBlock: number, options?: OperationOptions): AsyncIterable<BlockDigest> {
    const perPage = Math.floor(PAGE_BYTES / this.digestLength);
    const buffer = Buffer.allocUnsafe(perPage * this.digestLength);
    for (let first = fromBlock; first < this.blockCount; first += perPage) {
      throwIfAborted(options?.signal);
      const count = Math.min(perPage, this.blockCount - first);
      await this.readExactly(
        buffer.subarray(0, count * this.digestLength),
        CACHE_HEADER_BYTES + first * this.digestLength,
      );
      for (let i = 0; i < count; i++) {
        const digest = buffer.subarray(i * this.digestLength, (i + 1) * this.digestLength);
        yield { index: first + i, digest: isZero(digest) ? null : Uint8Array.from(digest) };
      }
    }
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}

class FileCacheWriter implements CacheWriter {
  private next: number;
  private buffer: Buffer;
  private buffered = 0;
  private bufferFirst: number;
  readonly resumedFrom: number;

  constructor(
    private readonly handle: FileHandle,
    private readonly temp: string,
    private readonly digestLength: number,
    private readonly blockCount: number,
    resumeFrom: number,
  ) {
    this.next = resumeFrom;
    this.resumedFrom = resumeFrom;
    this.bufferFirst = resumeFrom;
    this.buffer = Buffer.alloc(Math.floor(PAGE_BYTES / digestLength) * digestLength);
  }

  private async flushBuffer(): Promise<void> {
    if (this.buffered === 0) return;
    const bytes = this.buffered * this.digestLength;
    await this.handle.write(this.buffer, 0, bytes, CACHE_HEADER_BYTES + this.bufferFirst * this.digestLength);
    this.bufferFirst += this.buffered;
    this.buffered = 0;
    this.buffer.fill(0);
  }

  private async put(digest: Uint8Array | null): Promise<void> {
    if ((this.buffered + 1) * this.digestLength > this.buffer.length) await this.flushBuffer();
    if (digest) this.buffer.set(digest, this.buffered * this.digestLength);
    this.buffered++;
    this.next++;
  }

  private async fillTo(index: number): Promise<void> {
    while (this.next < index) await this.put(null);
  }

  async carry(source: CacheReader, fromBlock: number, toBlock: number): Promise<boolean> {
    if (!(source instanceof FileCacheReader)) return false;
    if (source.digestLength !== this.digestLength || source.blockCount !== this.blockCount) return false;
    if (!Number.isSafeInteger(fromBlock) || fromBlock < this.next || toBlock < fromBlock || toBlock > this.blockCount) {
      throw new InputError(
        `cache entries ${fromBlock}–${toBlock} out of order (next is ${this.next} of ${this.blockCount})`,
      );
    }
    try {
      await this.fillTo(fromBlock);
      // Page by page through the write buffer: bounded memory, and the buffer's file position stays right.
      for (let index = fromBlock; index < toBlock; ) {
        if (this.buffered * this.digestLength >= this.buffer.length) await this.flushBuffer();
        const room = this.buffer.length / this.digestLength - this.buffered;
        const count = Math.min(room, toBlock - index);
        await source.copyEntries(this.buffer.subarray(this.buffered * this.digestLength), index, count);
        this.buffered += count;
        this.next += count;
        index += count;
      }
    } catch (error) {
      throw toStorageError(error, `writing ${this.temp}`);
    }
    return true;
  }

  async append(index: number, digest: Uint8Array | null): Promise<void> {
    if (!Number.isSafeInteger(index) || index < this.next || index >= this.blockCount) {
      throw new InputError(`cache entry ${index} out of order (next is ${this.next} of ${this.blockCount})`);
    }
    if (digest && digest.length !== this.digestLength) {
      throw new InputError(`digest of ${digest.length} bytes where the cache holds ${this.digestLength}`);
    }
    try {
      await this.fillTo(index);
      await this.put(digest);
    } catch (error) {
      throw toStorageError(error, `writing ${this.temp}`);
    }
  }

  async appendEntries(index: number, entries: Uint8Array): Promise<void> {
    const count = entries.length / this.digestLength;
    if (
      !Number.isInteger(count) ||
      !Number.isSafeInteger(index) ||
      index < this.next ||
      index + count > this.blockCount
    ) {
      throw new InputError(
        `cache entries ${index}+${entries.length / this.digestLength} out of order or not whole (next is ${this.next} of ${this.blockCount})`,
      );
    }
    try {
      await this.fillTo(index);
      for (let done = 0; done < count; ) {
        if (this.buffered * this.digestLength >= this.buffer.length) await this.flushBuffer();
        const take = Math.min(count - done, this.buffer.length / this.digestLength - this.buffered);
        this.buffer.set(
          entries.subarray(done * this.digestLength, (done + take) * this.digestLength),
          this.buffered * this.digestLength,
        );
        this.buffered += take;
        this.next += take;
        done += take;
      }
    } catch (error) {
      throw toStorageError(error, `writing ${this.temp}`);
    }
  }

  async checkpoint(blockCount: number): Promise<void> {
    try {
      await this.fillTo(Math.min(blockCount, this.blockCount));
      await this.flushBuffer();
      await this.handle.sync();
    } catch (error) {
      throw toStorageError(error, `writing ${this.temp}`);
    }
  }

  async close(): Promise<void> {
    try {
      await this.flushBuffer();
      await this.handle.sync();
    } catch (error) {
      throw toStorageError(error, `writing ${this.temp}`);
    } finally {
      await this.handle.close().catch(() => undefined);
    }
  }
}

/**
 * Seals a run's new cache (false when it does not exist): writes the replica's fingerprint into
 * the header, cuts the file to its body, appends the trailer checksum, makes it durable (one
 * fsync), and renames it over the cache.
 */
async function seal(temp: string, final: string, fingerprint: string): Promise<boolean> {
  const handle = await openIfExists(temp, 'r+');
  if (!handle) return false;
  try {
    const head = Buffer.alloc(CACHE_HEADER_BYTES);
    await handle.read(head, 0, CACHE_HEADER_BYTES, 0);
    const header = decodeHeader(head, temp);
    await handle.write(
      encodeHeader({ ...header, fingerprintHash: hashFingerprint(fingerprint) }),
      0,
      CACHE_HEADER_BYTES,
      0,
    );
    const body = CACHE_HEADER_BYTES + header.blockCount * header.digestLength;
    const { size } = await handle.stat();
    if (size < body) throw new FormatError(`${temp}: incomplete (${size} of ${body} bytes)`);
    await handle.truncate(body);
    await handle.write(await hashFileRange(handle, body, temp), 0, CACHE_TRAILER_BYTES, body);
    await handle.sync();
  } catch (error) {
    throw toStorageError(error, `completing ${temp}`);
  } finally {
    await handle.close();
  }
  await rename(temp, final).catch((error: unknown) => {
    throw toStorageError(error, `replacing ${final}`);
  });
  await fsyncDirectory(join(final, '..'));
  return true;
}

/**
 * Replication caches as files: `<dir>/<job>/<disk>.rkc`, a versioned binary file (64-byte header
 * with format version, digest kind, block size, block count and the replica fingerprint's hash;
 * the digests; a sha256 trailer over both). A run writes its new cache beside it
 * (`<disk>.<runId>.rkc.tmp`) and renames it over the old one at commit. A corrupt, truncated or
 * foreign file is reported as `invalid` (never trusted) and replaced by the next run.
 */
export class FileCacheProvider implements ReplicationCacheProvider {
  /** @param dir - the folder holding the caches (the state folder's `cache/`, say). */
  constructor(readonly dir: string) {}

  private paths(key: CacheKey, runId?: string) {
    const folder = join(this.dir, checkName(key.job, 'job'));
    const base = fileName(key.diskId);
    return {
      folder,
      final: join(folder, `${base}.rkc`),
      temp: runId ? join(folder, `${base}.${checkName(runId, 'run id')}.rkc.tmp`) : '',
    };
  }

  async open(key: CacheKey, expect: CacheExpectation, options?: OperationOptions): Promise<CacheOpenResult> {
    const { final } = this.paths(key);
    const handle = await openIfExists(final);
    if (!handle) return { status: 'missing' };
    const invalid = async (reason: string): Promise<CacheOpenResult> => {
      await handle.close();
      return { status: 'invalid', reason };
    };
    try {
      throwIfAborted(options?.signal);
      const { size } = await handle.stat();
      const head = Buffer.alloc(CACHE_HEADER_BYTES);
      await handle.read(head, 0, CACHE_HEADER_BYTES, 0);
      let header: ReturnType<typeof decodeHeader>;
      try {
        header = decodeHeader(head.subarray(0, Math.min(size, CACHE_HEADER_BYTES)), final);
      } catch (error) {
        return invalid((error as Error).message);
      }
      const kind = asDigestKind(expect.digest);
      if (header.digestId !== DIGEST_IDS[kind] || header.digestLength !== DIGEST_LENGTH[kind]) {
        return invalid(`it holds another digest than ${kind}`);
      }
      if (header.blockSize !== expect.blockSize || header.blockCount !== expect.blockCount) {
        return invalid(`it was written for ${header.blockCount} blocks of ${header.blockSize} bytes`);
      }
      if (!Buffer.from(header.fingerprintHash).equals(hashFingerprint(expect.fingerprint))) {
        return invalid('the replica changed since the cache was written');
      }
      const body = CACHE_HEADER_BYTES + header.blockCount * header.digestLength;
      if (size !== body + CACHE_TRAILER_BYTES)
        return invalid(`it is ${size} bytes where ${body + CACHE_TRAILER_BYTES} were expected (truncated)`);
      const trailer = Buffer.alloc(CACHE_TRAILER_BYTES);
      await handle.read(trailer, 0, CACHE_TRAILER_BYTES, body);
      if (!trailer.equals(await hashFileRange(handle, body, final)))
        return invalid('its checksum does not match (corrupt)');
      return { status: 'ok', reader: new FileCacheReader(handle, final, header.digestLength, header.blockCount) };
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw toStorageError(error, `reading ${final}`);
    }
  }

  async begin(
    key: CacheKey,
    meta: { runId: string; blockSize: number; blockCount: number; digest: string },
    resumeFrom: number,
  ): Promise<CacheWriter> {
    const { folder, temp } = this.paths(key, meta.runId);
    const kind = asDigestKind(meta.digest);
    const digestLength = DIGEST_LENGTH[kind];
    try {
      await mkdir(folder, { recursive: true });
      const existing = resumeFrom > 0 ? await stat(temp).catch(() => undefined) : undefined;
      const usable = existing && existing.size >= CACHE_HEADER_BYTES + resumeFrom * digestLength;
      const handle = await open(temp, usable ? 'r+' : 'w+');
      const from = usable ? resumeFrom : 0;
      if (!usable) {
        await handle.write(
          encodeHeader({
            version: CACHE_VERSION,
            digestId: DIGEST_IDS[kind],
            digestLength,
            blockSize: meta.blockSize,
            blockCount: meta.blockCount,
            fingerprintHash: new Uint8Array(32),
          }),
          0,
          CACHE_HEADER_BYTES,
          0,
        );
      }
      await handle.truncate(CACHE_HEADER_BYTES + from * digestLength);
      return new FileCacheWriter(handle, temp, digestLength, meta.blockCount, from);
    } catch (error) {
      throw toStorageError(error, `starting the replication cache ${temp}`);
    }
  }

  async commitPending(key: CacheKey, runId: string, fingerprint: string): Promise<boolean> {
    const { final, temp } = this.paths(key, runId);
    return seal(temp, final, fingerprint);
  }

  async abortPending(key: CacheKey, runId: string): Promise<void> {
    await rm(this.paths(key, runId).temp, { force: true });
  }
}
