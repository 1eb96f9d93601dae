import { existsSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import { type ByteSource, type ImageReader, openFileSource, openVhdxSource } from '@replikit/formats';

/** Bytes read per file through {@link openCountedVhdx}, kept by the simulated host. */
export type ReadCounts = Map<string, number>;

function counted(source: ByteSource, path: string, counts: ReadCounts): ByteSource {
  return {
    name: source.name,
    size: source.size,
    async readInto(target, offset, what) {
      await source.readInto(target, offset, what);
      counts.set(path, (counts.get(path) ?? 0) + target.length);
    },
    close: () => source.close(),
  };
}

/**
 * Opens a VHDX of the simulated host (and its parents) so that every byte read from each file,
 * headers and BAT included, is counted in `counts`: the host's measure of what a reader fetched,
 * independent of what the reader says it read.
 */
export async function openCountedVhdx(root: string, path: string, counts: ReadCounts): Promise<ImageReader> {
  const inside = relative(root, resolve(path));
  if (!isAbsolute(path) || inside === '' || inside.startsWith('..') || isAbsolute(inside)) {
    throw new Error(`${path} is not a file of the simulated host in ${root}`);
  }
  const source = counted(await openFileSource(path), path, counts);
  return openVhdxSource(source, {
    resolveParent: async (child, candidates) => {
      const parent = candidates.find((c) => existsSync(c));
      if (!parent)
        throw new Error(`${child}: its parent is not on the simulated host (looked for ${candidates.join(', ')})`);
      return openCountedVhdx(root, parent, counts);
    },
  });
}
