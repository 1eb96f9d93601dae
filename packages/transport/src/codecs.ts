import { brotliCompressSync, brotliDecompressSync, constants, deflateRawSync, inflateRawSync } from 'node:zlib';
import { InputError } from '@replikit/core';
import { worthCompressing } from '@replikit/core/internal';
import { deflateSync as fflateDeflate, inflateSync as fflateInflate } from 'fflate';
import { ProtocolError } from './protocol/protocol-error.js';

/**
 * A block codec. `encode` may return `undefined` when compressing does not pay (the block then
 * goes raw); `decode` must never produce more than `rawLength` bytes.
 */
export interface BlockCodec {
  /** Name negotiated in `hello` (`deflate`, `zlib-deflate`, `brotli`). */
  readonly name: string;
  /** Wire id of the codec, carried by each compressed `block` frame. */
  readonly id: number;
  /** Compresses a block. */
  encode(block: Uint8Array): Uint8Array;
  /** Decompresses a payload to exactly `rawLength` bytes, or throws. */
  decode(payload: Uint8Array, rawLength: number): Uint8Array;
}

function exact(out: Uint8Array, rawLength: number, name: string): Uint8Array {
  if (out.length !== rawLength) {
    throw new ProtocolError(
      `a ${name} block decodes to ${out.length === rawLength + 1 ? 'more' : out.length} bytes, not ${rawLength}`,
    );
  }
  return out;
}

/** fflate's raw deflate (level 1): pure JavaScript, available everywhere. */
const fflateCodec: BlockCodec = {
  name: 'deflate',
  id: 1,
  encode: (block) => fflateDeflate(block, { level: 1 }),
  decode(payload, rawLength) {
    // One byte of slack: a stream that decodes to more than rawLength fills it and is refused,
    // and fflate never writes beyond the buffer it is given.
    let out: Uint8Array;
    try {
      out = fflateInflate(payload, { out: new Uint8Array(rawLength + 1) });
    } catch (error) {
      throw new ProtocolError(`a deflate block does not decode: ${(error as Error).message}`);
    }
    return exact(out, rawLength, 'deflate');
  },
};

function zlibDecode(name: string, run: (payload: Uint8Array, max: number) => Buffer) {
  return (payload: Uint8Array, rawLength: number): Uint8Array => {
    let out: Buffer;
    try {
      out = run(payload, rawLength);
    } catch (error) {
      throw new ProtocolError(`a ${name} block does not decode: ${(error as Error).message}`);
    }
    return exact(out, rawLength, name);
  };
}

/** node:zlib raw deflate (level 1), native. */

const zlibDeflateCodec: BlockCodec = {
  name: 'zlib-deflate',
  id: 2,
  encode: (block) => deflateRawSync(block, { level: 1 }),
  decode: zlibDecode('zlib-deflate', (payload, max) =>
    inflateRawSync(payload, { maxOutputLength: max, chunkSize: max + 1 }),
  ),
};

function brotliOptions(block: Uint8Array) {
  return {
    params: { [constants.BROTLI_PARAM_QUALITY]: 1, [constants.BROTLI_PARAM_SIZE_HINT]: block.length },
  };
}

/** node:zlib brotli at quality 1 (fast), native. */
const brotliCodec: BlockCodec = {
  name: 'brotli',
  id: 3,
  encode: (block) => brotliCompressSync(block, brotliOptions(block)),
  decode: zlibDecode('brotli', (payload, max) =>
    brotliDecompressSync(payload, { maxOutputLength: max, chunkSize: max + 1 }),
  ),
};

const CODECS: readonly BlockCodec[] = [fflateCodec, zlibDeflateCodec, brotliCodec];

/** Names of the codecs this runtime offers, `none` first. Node 20 has no zstd in node:zlib. */
export function availableCodecs(): string[] {
  return ['none', ...CODECS.map((codec) => codec.name)];
}

/** The codec named `name`; `undefined` for `none`. */
export function codecByName(name: string): BlockCodec | undefined {
  if (name === 'none') return undefined;
  const codec = CODECS.find((c) => c.name === name);
  if (!codec) throw new InputError(`unknown codec '${name}'; use one of ${availableCodecs().join(', ')}`);
  return codec;
}

/** The codec with wire id `id`, or a protocol error. */
export function codecById(id: number): BlockCodec {
  const codec = CODECS.find((c) => c.id === id);
  if (!codec) throw new ProtocolError(`unknown codec id ${id}`);
  return codec;
}

/**
 * The default codec, picked from `pnpm bench` on the demo mix (docs/protocol.md): node:zlib's
 * native deflate at level 1.
 */
export const DEFAULT_CODEC = 'zlib-deflate';

/**
 * A compressed block must save at least this fraction of its size to be sent compressed;
 * otherwise (random data, already-compressed files) it goes raw and decoding costs nothing.
 */
export const MIN_SAVING = 1 / 8;

/**
 * Compresses `block` with `codec` when that pays; returns the compressed bytes or `undefined`
 * (send raw). It runs on the calling thread: measured on the 2-core development machine, one
 * asynchronous node:zlib call per 64 KiB block (libuv's pool) cost twice the CPU of the
 * synchronous call (a new zlib stream and a thread hand-off per block) and ran at 35 MB/s one
 * block at a time against 550 MB/s (docs/protocol.md, section 10).
 */
export function maybeCompress(codec: BlockCodec | undefined, block: Uint8Array): Uint8Array | undefined {
  if (!codec || !worthCompressing(block)) return undefined;
  const out = codec.encode(block);
  return out.length <= block.length * (1 - MIN_SAVING) ? out : undefined;
}
