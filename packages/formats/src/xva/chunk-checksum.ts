import { createHash } from 'node:crypto';
import { FormatError } from '@replikit/core';
import { printable } from '../cursor.js';

/** The checksum file kinds that may follow an XVA chunk (xapi-project/xen-api ocaml/xapi/stream_vdi.ml). */
export const CHECKSUM_EXTENSIONS = ['.xxhash', '.checksum'] as const;

/** The checksum file extension of `entryName` when it is the checksum file of `chunkName`. */
export function checksumKind(entryName: string, chunkName: string): '.xxhash' | '.checksum' | undefined {
  return CHECKSUM_EXTENSIONS.find((ext) => entryName === `${chunkName}${ext}`);
}

/**
 * Checks a chunk against the content of its checksum file: `.xxhash` holds XXH64 (seed 0) as 16
 * hex digits (XAPI writes them upper-case, `%016LX`), `.checksum` holds SHA-1 in hex. Case and
 * surrounding white space are ignored. A mismatch is a {@link FormatError} naming the chunk.
 */
export async function verifyChunk(
  file: string,
  chunkName: string,
  kind: '.xxhash' | '.checksum',
  stored: Uint8Array,
  data: Uint8Array,
): Promise<void> {
  const expected = new TextDecoder().decode(stored).trim().toLowerCase();
  const computed = kind === '.xxhash' ? await xxh64(data) : createHash('sha1').update(data).digest('hex');
  if (expected !== computed) {
    const algorithm = kind === '.xxhash' ? 'XXH64' : 'SHA-1';
    throw new FormatError(
      `${file}: chunk ${chunkName} is damaged: its ${algorithm} is ${computed}, the archive says ${printable(expected)}`,
      { details: { file, chunk: chunkName, algorithm, expected, computed } },
    );
  }
}

/**
 * XXH64 (seed 0) in hex, from hash-wasm loaded on first use: importing it costs ~0.1 s of CPU,
 * which every program that imports this package (the file driver, so each `replikit run`) would
 * otherwise pay without reading an XVA.
 */
async function xxh64(data: Uint8Array): Promise<string> {
  const { xxhash64 } = await import('hash-wasm');
  return xxhash64(data);
}
