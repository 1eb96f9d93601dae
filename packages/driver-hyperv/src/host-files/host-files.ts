import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DriverError } from '@replikit/core';
import { type ImageReader, openDisk } from '@replikit/formats';
import { LOCAL_TARGET_FILES, type TargetFiles } from '../target/target-files.js';

/**
 * How the driver reaches the files of its host (paths as the host names them: `Get-VHD`'s, the
 * VM's folder): local files when replikit runs on the host, a `replikit-agent --host-files`
 * otherwise (`RemoteHostFiles` of `@replikit/transport`).
 */
export interface HyperVHostFiles {
  /** Opens a VHDX (or VHD) file with its differencing parents, for reading. */
  openImage(path: string): Promise<ImageReader>;
  /** A small state file's text (the driver's RCT reference points), or undefined when absent. */
  readText(path: string): Promise<string | undefined>;
  /** Writes a small state file atomically, making its folder when missing. */
  writeText(path: string, text: string): Promise<void>;
  /** The target side's file operations on replica folders; unset: the host is a source only. */
  targetFiles?: TargetFiles;
  /** Releases what reaches the files (an agent's connection). */
  close?(): Promise<void>;
}

async function openLocalImage(path: string): Promise<ImageReader> {
  if ((await lstat(path)).isSymbolicLink()) {
    throw new DriverError(`${path} is a symbolic link; replikit reads disk files only, never through a link`);
  }
  return openDisk(path);
}

/** The host's files read and written in place: replikit runs on the Hyper-V host. */
export const LOCAL_HOST_FILES: HyperVHostFiles = Object.freeze({
  openImage: openLocalImage,
  targetFiles: LOCAL_TARGET_FILES,
  async readText(path: string): Promise<string | undefined> {
    try {
      return await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  },
  async writeText(path: string, text: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${randomUUID()}.tmp`;
    try {
      await writeFile(tmp, text);
      await rename(tmp, path);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
  },
});
