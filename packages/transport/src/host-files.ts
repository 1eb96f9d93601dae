import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import {
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  writeFile,
} from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { ConflictError, InputError, NotFoundError } from '@replikit/core';
import { type ImageReader, openDisk } from '@replikit/formats';

/** Most characters of a state file the agent reads or writes for a driver (`hostTextWrite`). */
export const MAX_HOST_TEXT = 1024 * 1024;

/** Most names one `hostFileList` answer holds (a replica folder holds a few dozen). */
export const MAX_HOST_LIST = 10_000;

/** A file's identity and change stamp, as `hostFileStat` answers it. */
export interface HostFileStat {
  kind: 'file' | 'folder';
  size: number;
  /** Device, inode and modification time (ns), as decimal strings: they exceed 2^53. */
  dev: string;
  ino: string;
  mtimeNs: string;
}

/** Most differencing levels the agent opens under one image (a cycle guard). */
const MAX_CHAIN = 32;

/**
 * The files of a host under one root, as an agent with `--host-files` serves them: every path a
 * peer names must be absolute, lie under the root once resolved (`..` and symbolic links that lead
 * out are refused), and name no symbolic link itself; the parents of a differencing image are
 * opened only where they lie under the root too.
 */
export class HostFileRoot {
  private real: Promise<string> | undefined;

  /** @param root - The folder the agent serves (the Hyper-V host's VM and disk folder). */
  constructor(readonly root: string) {}

  /**
   * `path` checked to lie under the root: resolved, and its deepest existing folder's real path
   * under the root's real path.
   *
   * @throws `E_INPUT` naming the path when it lies outside.
   */
  async confine(path: string): Promise<string> {
    const outside = () =>
      new InputError(`'${path}' lies outside the agent's root; the agent serves only files under its --root`);
    if (typeof path !== 'string' || path === '' || path.includes('\0') || !isAbsolute(path)) throw outside();
    this.real ??= realpath(this.root);
    const root = await this.real;
    const wanted = resolve(path);
    const under = (p: string) => {
      const rel = relative(root, p);
      return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
    };
    if (!under(wanted)) throw outside();
    // The deepest folder that exists, by its real path: a link inside the root may lead out.
    let folder = dirname(wanted);
    for (;;) {
      try {
        if (!under(await realpath(folder))) throw outside();
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        if (folder === dirname(folder)) throw outside();
        folder = dirname(folder);
      }
    }
    return wanted;
  }

  /** Opens an image (VHDX, VHD, raw) under the root, with its parents under the root. */
  async openImage(path: string, depth = 0): Promise<ImageReader> {
    const file = await this.confine(path);
    if ((await lstat(file)).isSymbolicLink()) {
      throw new InputError(`'${path}' is a symbolic link; the agent reads disk files only, never through a link`);
    }
    return openDisk(file, {
      maxChainDepth: MAX_CHAIN,
      resolveParent: async (child, candidates) => {
        if (depth + 1 >= MAX_CHAIN) throw new InputError(`${child}: more than ${MAX_CHAIN} differencing levels`);
        for (const candidate of candidates) {
          let inside: string;
          try {
            inside = await this.confine(candidate);
            await lstat(inside);
          } catch {
            continue;
          }
          return this.openImage(inside, depth + 1);
        }
        throw new InputError(
          `${child}: its parent is not under the agent's root (looked for ${candidates.join(', ')})`,
        );
      },
    });
  }

  /** A small state file's text, or undefined when it does not exist. */
  async readText(path: string): Promise<string | undefined> {
    const file = await this.confine(path);
    try {
      if ((await lstat(file)).isSymbolicLink()) throw new InputError(`'${path}' is a symbolic link`);
      if ((await lstat(file)).size > MAX_HOST_TEXT)
        throw new InputError(`'${path}' is larger than ${MAX_HOST_TEXT} bytes`);
      return await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  /** Writes a small state file atomically (its folder made when missing). */
  async writeText(path: string, text: string): Promise<void> {
    if (text.length > MAX_HOST_TEXT) throw new InputError(`a state file holds at most ${MAX_HOST_TEXT} characters`);
    const file = await this.confine(path);
    await mkdir(dirname(file), { recursive: true });
    // mkdir may have followed nothing new, but check again: the folder now exists.
    await this.confine(file);
    const tmp = `${file}.${randomUUID()}.tmp`;
    try {
      await writeFile(tmp, text, { flag: 'wx' });
      await rename(tmp, file);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
  }

  /** The root itself is never renamed or removed. */
  private async confineBelow(path: string): Promise<string> {
    const file = await this.confine(path);
    if (file === (await this.real)) throw new InputError(`'${path}' is the agent's root itself`);
    return file;
  }

  /** Opens a file under the root without following a symbolic link (`ELOOP` becomes `E_INPUT`). */
  private async openNoFollow(path: string, flags: number): Promise<FileHandle> {
    const file = await this.confine(path);
    try {
      return await open(file, flags | constants.O_NOFOLLOW, 0o600);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw new InputError(`'${path}' is a symbolic link; the agent never writes through a link`);
      if (code === 'EEXIST') throw new ConflictError(`'${path}' exists`);
      if (code === 'ENOENT') throw new NotFoundError(`'${path}' does not exist`);
      throw error;
    }
  }

  /** Runs `use` on the file at `path`, opened with `flags` (no link followed), and closes it. */
  private async withFile<T>(path: string, flags: number, use: (handle: FileHandle) => Promise<T>): Promise<T> {
    const handle = await this.openNoFollow(path, flags);
    try {
      return await use(handle);
    } finally {
      await handle.close();
    }
  }

  /** The kind, size and change stamp of `path` (not followed when a link: refused), or undefined. */
  async stat(path: string): Promise<HostFileStat | undefined> {
    const file = await this.confine(path);
    let s: Awaited<ReturnType<typeof lstat>> & { ino: bigint };
    try {
      s = (await lstat(file, { bigint: true })) as typeof s;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    if (s.isSymbolicLink()) throw new InputError(`'${path}' is a symbolic link`);
    return {
      kind: s.isDirectory() ? 'folder' : 'file',
      size: Number(s.size),
      dev: String(s.dev),
      ino: String(s.ino),
      mtimeNs: String((s as unknown as { mtimeNs: bigint }).mtimeNs),
    };
  }

  /** The names in folder `path` (none when it does not exist), at most {@link MAX_HOST_LIST}. */
  async list(path: string): Promise<string[]> {
    const folder = await this.confine(path);
    try {
      const names = await readdir(folder);
      if (names.length > MAX_HOST_LIST) throw new InputError(`'${path}' holds more than ${MAX_HOST_LIST} names`);
      return names;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  }

  /** Makes folder `path` and its missing parents. */
  async makeFolder(path: string): Promise<void> {
    const folder = await this.confine(path);
    await mkdir(folder, { recursive: true });
    await this.confine(folder);
  }

  /**
   * Creates file `path`: empty (an existing one truncated), or, `exclusive`, only when it does not
   * exist (`E_CONFLICT` otherwise) holding `text`.
   */
  async createFile(path: string, exclusive: boolean, text = ''): Promise<void> {
    if (text.length > MAX_HOST_TEXT) throw new InputError(`a created file holds at most ${MAX_HOST_TEXT} characters`);
    const flags = constants.O_WRONLY | constants.O_CREAT | (exclusive ? constants.O_EXCL : constants.O_TRUNC);
    await this.withFile(path, flags, async (handle) => {
      if (text !== '') await handle.writeFile(text);
    });
  }

  /** Writes `data` at `offset` of the existing file `path`. */
  async writeAt(path: string, offset: number, data: Uint8Array): Promise<void> {
    await this.withFile(path, constants.O_WRONLY, async (handle) => {
      for (let done = 0; done < data.length; ) {
        const { bytesWritten } = await handle.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    });
  }

  /** Up to `length` bytes at `offset` of file `path` (fewer at its end). */
  async readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
    return this.withFile(path, constants.O_RDONLY, async (handle) => {
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return out.subarray(0, done);
    });
  }

  /** Sets the length of file `path`. */
  async truncate(path: string, size: number): Promise<void> {
    await this.withFile(path, constants.O_WRONLY, (handle) => handle.truncate(size));
  }

  /** fsyncs file `path` (its data and size reach the disk). */
  async sync(path: string): Promise<void> {
    await this.withFile(path, constants.O_RDONLY, (handle) => handle.sync());
  }

  /** Renames `from` to `to` (atomic, replacing `to`), both under the root; a link is never moved. */
  async rename(from: string, to: string): Promise<void> {
    const source = await this.confineBelow(from);
    const target = await this.confineBelow(to);
    let s: Awaited<ReturnType<typeof lstat>>;
    try {
      s = await lstat(source);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`'${from}' does not exist`);
      throw error;
    }
    if (s.isSymbolicLink()) throw new InputError(`'${from}' is a symbolic link; the agent never moves a link`);
    await rename(source, target);
  }

  /** Removes file `path` (or, `recursive`, folder `path` with its content; links removed, not followed). */
  async remove(path: string, recursive: boolean): Promise<void> {
    const file = await this.confineBelow(path);
    await rm(file, { force: true, recursive });
  }
}
