import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isReplikitError, NotFoundError } from '@replikit/core';
import {
  type CreateVhdxOptions,
  createVhdx,
  openVhdx,
  openVhdxSource,
  type VhdxReader,
  type VhdxWriter,
} from '@replikit/formats';
import { type RemoteHostFile, type RemoteHostFiles, remoteByteSource } from '@replikit/transport';

/**
 * What the target side does to the files of a replica's folder: local calls when replikit runs
 * on the Hyper-V host, requests to its `replikit-agent --host-files` otherwise. Nothing more than
 * the local target needs; every write is atomic (a temporary file renamed) or into a file no
 * reader sees yet (a pending VHDX), as it is locally.
 */
export interface TargetFiles {
  /** Makes folder `path` and its missing parents. */
  makeFolder(path: string): Promise<void>;
  /** A small file's text, or undefined when it does not exist. */
  readText(path: string): Promise<string | undefined>;
  /** Replaces a small file atomically (a temporary file, then a rename). */
  writeText(path: string, text: string): Promise<void>;
  /** Creates `path` holding `text` only when it does not exist; false when it did. */
  createExclusive(path: string, text: string): Promise<boolean>;
  /** Renames `from` over `to`. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file (or a folder with what it holds, `recursive`); nothing when absent. */
  remove(path: string, recursive?: boolean): Promise<void>;
  /** The names in folder `path` (none when it does not exist). */
  list(path: string): Promise<string[]>;
  /** `size:dev:ino:mtimeNs` of a file, or `missing`. */
  stamp(path: string): Promise<string>;
  /** True when `path` exists. */
  exists(path: string): Promise<boolean>;
  /** Creates a VHDX at `path` (synced on flush and close). */
  createVhdx(path: string, options: CreateVhdxOptions): Promise<VhdxWriter>;
  /** Opens a VHDX at `path` for reading. */
  openVhdx(path: string): Promise<VhdxReader>;
}

/** The replica folders' files on this machine (replikit runs on the Hyper-V host). */
export const LOCAL_TARGET_FILES: TargetFiles = Object.freeze({
  async makeFolder(path: string) {
    await mkdir(path, { recursive: true });
  },
  async readText(path: string) {
    try {
      return await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  },
  async writeText(path: string, text: string) {
    const tmp = `${path}.${randomUUID()}.tmp`;
    await writeFile(tmp, text);
    await rename(tmp, path);
  },
  async createExclusive(path: string, text: string) {
    try {
      await writeFile(path, text, { flag: 'wx' });
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw error;
    }
  },
  rename: (from: string, to: string) => rename(from, to),
  remove: (path: string, recursive = false) => rm(path, { force: true, recursive }),
  list: (path: string) => readdir(path).catch(() => [] as string[]),
  async stamp(path: string) {
    try {
      const s = await stat(path, { bigint: true });
      return `${s.size}:${s.dev}:${s.ino}:${s.mtimeNs}`;
    } catch {
      return 'missing';
    }
  },
  exists: (path: string) =>
    lstat(path).then(
      () => true,
      () => false,
    ),
  createVhdx: (path: string, options: CreateVhdxOptions) => createVhdx(path, options),
  openVhdx: (path: string) => openVhdx(path),
});

/**
 * The replica folders' files on a host reached through its agent: each call one bounded request
 * (`hostFile*`, docs/protocol.md section 14), each path confined to the agent's root there.
 */
export function agentTargetFiles(files: RemoteHostFiles): TargetFiles {
  // The files VHDX writers have open, by their current path: a rename moves them (the pending
  // writer renames its temporary file at its first flush and goes on writing it).
  const open = new Map<string, RemoteHostFile>();
  return {
    makeFolder: (path) => files.makeFolder(path),
    readText: (path) => files.readText(path),
    writeText: (path, text) => files.writeText(path, text),
    async createExclusive(path, text) {
      try {
        await files.createFile(path, true, text);
        return true;
      } catch (error) {
        if (isReplikitError(error, 'E_CONFLICT')) return false;
        throw error;
      }
    },
    async rename(from, to) {
      await files.rename(from, to);
      const moved = open.get(from);
      if (moved) {
        open.delete(from);
        moved.renamed(to);
        open.set(to, moved);
      }
    },
    remove: (path, recursive = false) => files.remove(path, recursive),
    list: (path) => files.list(path),
    async stamp(path) {
      const s = await files.stat(path).catch(() => undefined);
      return s ? `${s.size}:${s.dev}:${s.ino}:${s.mtimeNs}` : 'missing';
    },
    exists: async (path) => (await files.stat(path)) !== undefined,
    async createVhdx(path, options) {
      await files.createFile(path);
      const file = files.file(path);
      open.set(path, file);
      const forget = () => {
        if (open.get(file.path) === file) open.delete(file.path);
      };
      const close = file.close.bind(file);
      file.close = async () => {
        forget();
        await close();
      };
      try {
        return await createVhdx(path, { ...options, file });
      } catch (error) {
        forget();
        throw error;
      }
    },
    async openVhdx(path) {
      const s = await files.stat(path);
      if (s?.kind !== 'file') throw new NotFoundError(`${path} is not a file on the agent's host`);
      return openVhdxSource(remoteByteSource(files.file(path), s.size));
    },
  };
}
