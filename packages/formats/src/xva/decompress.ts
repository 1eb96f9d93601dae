import { once } from 'node:events';
import { createGunzip } from 'node:zlib';
import { FormatError } from '@replikit/core';
import { Decompress } from 'fzstd';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** How an XVA stream is compressed. */
export type XvaCompression = 'none' | 'gzip' | 'zstd';

const startsWith = (head: Uint8Array, magic: number[]) => magic.every((b, i) => head[i] === b);

/**
 * Undoes the compression of an XVA stream, as XAPI's importer accepts it
 * (xapi-project/xen-api ocaml/xapi/import.ml `with_open_archive`: a plain tar first, else zstd
 * when the stream starts with zstd's magic, else gzip). gzip goes through node:zlib, zstd through
 * the pure-JS `fzstd` decoder (Node 20 has no zstd). Damaged compressed data is a
 * {@link FormatError}. `onDetected` learns which compression was found.
 */
export async function* decompressXva(
  source: AsyncIterable<Uint8Array>,
  file: string,
  onDetected?: (compression: XvaCompression) => void,
): AsyncGenerator<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let headLength = 0;
  let ended = false;
  while (headLength < ZSTD_MAGIC.length) {
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      break;
    }
    head.push(next.value);
    headLength += next.value.length;
  }
  const first = Buffer.concat(head);
  async function* all(): AsyncGenerator<Uint8Array> {
    if (first.length > 0) yield first;
    if (ended) return;
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) {
          ended = true;
          return;
        }
        yield next.value;
      }
    } finally {
      if (!ended) await iterator.return?.();
    }
  }
  const compression: XvaCompression = startsWith(first, GZIP_MAGIC)
    ? 'gzip'
    : startsWith(first, ZSTD_MAGIC)
      ? 'zstd'
      : 'none';
  onDetected?.(compression);
  if (compression === 'none') yield* all();
  else if (compression === 'gzip') yield* gunzip(all(), file);
  else yield* unzstd(all(), file);
}

async function* gunzip(input: AsyncGenerator<Uint8Array>, file: string): AsyncGenerator<Uint8Array> {
  const zlib = createGunzip();
  const stop = new AbortController();
  const feed = (async () => {
    try {
      for await (const piece of input) {
        if (!zlib.write(piece)) await once(zlib, 'drain', { signal: stop.signal });
      }
      zlib.end();
    } catch (error) {
      if (!stop.signal.aborted) zlib.destroy(error as Error);
    }
  })();
  try {
    for await (const out of zlib) yield out as Uint8Array;
  } catch (error) {
    if (error instanceof FormatError) throw error;
    const e = error as { code?: string; message?: string };
    if (typeof e.code === 'string' && e.code.startsWith('Z_')) {
      throw new FormatError(`${file}: the gzip-compressed XVA is damaged or cut short (${e.message ?? e.code})`);
    }
    throw error;
  } finally {
    stop.abort();
    zlib.destroy();
    await feed;
  }
}

async function* unzstd(input: AsyncGenerator<Uint8Array>, file: string): AsyncGenerator<Uint8Array> {
  const out: Uint8Array[] = [];
  let finished = false;
  const decoder = new Decompress((data, final) => {
    out.push(data.slice());
    if (final) finished = true;
  });
  const push = (piece: Uint8Array, final: boolean) => {
    try {
      decoder.push(piece, final);
    } catch (error) {
      throw new FormatError(
        `${file}: the zstd-compressed XVA is damaged (${(error as Error).message ?? 'invalid data'})`,
      );
    }
  };
  for await (const piece of input) {
    push(piece, false);
    while (out.length > 0) yield out.shift()!;
  }
  push(new Uint8Array(0), true);
  while (out.length > 0) yield out.shift()!;
  if (!finished) throw new FormatError(`${file}: the zstd-compressed XVA is cut short`);
}
