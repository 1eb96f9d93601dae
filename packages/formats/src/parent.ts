import { access } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { FormatError } from '@replikit/core';
import { printable } from './cursor.js';
import type { ImageReader } from './image.js';

/** How a differencing image finds its parent. */
export interface ParentOptions {
  /**
   * Opens the parent of a differencing image. Given the child's path and the candidate paths its
   * locators name (best first), it returns the opened parent. The default tries each candidate
   * that exists, in order. Pass a function that throws to refuse differencing images.
   */
  resolveParent?: (child: string, candidates: string[]) => Promise<ImageReader>;
  /**
   * How many differencing levels may be stacked before the chain is refused (a cycle guard).
   * @default 32
   */
  maxChainDepth?: number;
  /** @internal the depth of the image being opened. */
  depth?: number;
}

/** Turns a locator path (Windows relative/absolute or POSIX) into local candidate paths. */
export function parentCandidates(child: string, located: string[]): string[] {
  const dir = dirname(child);
  const out: string[] = [];
  for (const raw of located) {
    if (!raw) continue;
    const text = raw.replace(/^\\\\\?\\/, '');
    const posix = text.replace(/\\/g, '/');
    if (/^[a-zA-Z]:\//.test(posix)) {
      out.push(join(dir, basename(posix)));
    } else if (isAbsolute(posix)) {
      out.push(posix, join(dir, basename(posix)));
    } else {
      out.push(resolve(dir, posix));
    }
  }
  return [...new Set(out)];
}

/** Finds the first candidate that exists. */
export async function firstExisting(child: string, candidates: string[]): Promise<string> {
  for (const candidate of candidates) {
    try {
      await access(candidate);
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new FormatError(
    `${child}: differencing image, but its parent was not found (looked for ${printable(candidates.join(', ')) || 'nothing: no parent locator'})`,
    { details: { file: child, candidates } },
  );
}

/** Throws when a chain is deeper than allowed. */
export function checkDepth(child: string, options: ParentOptions): number {
  const depth = options.depth ?? 0;
  const max = options.maxChainDepth ?? 32;
  if (depth >= max) {
    throw new FormatError(`${child}: differencing chain deeper than ${max} images (a cycle?)`, {
      details: { file: child, depth },
    });
  }
  return depth;
}
