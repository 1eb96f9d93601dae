import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { InputError } from '@replikit/core';
import { type ImageReader, openDisk } from '@replikit/formats';

/** Most characters of a state file the agent reads or writes for a driver (`hostTextWrite`). */
export const MAX_HOST_TEXT = 1024 * 1024;

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
}
