import * as zlib from 'node:zlib';
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
  /** Name offered in `hello` (`deflate`, `zlib-deflate`, `brotli`, `zstd`). */
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

/**
 * node:zlib's output chunk for a block of `rawLength` bytes: one chunk for the whole block (and the
 * byte that shows it decodes longer), never under zlib's minimum of 64 bytes (a disk's last block
 * may be a few bytes long).
 */
function chunkSizeFor(rawLength: number): number {
  return Math.max(constants.Z_MIN_CHUNK, rawLength + 1);
}

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
    inflateRawSync(payload, { maxOutputLength: max, chunkSize: chunkSizeFor(max) }),
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
    brotliDecompressSync(payload, { maxOutputLength: max, chunkSize: chunkSizeFor(max) }),
  ),
};

/** node:zlib's zstd, present from Node 22.15 and 24 (typed here: Node 20's types lack it). */
interface ZstdApi {
  zstdCompressSync(block: Uint8Array, options: { params: Record<number, number> }): Buffer;
  zstdDecompressSync(payload: Uint8Array, options: { maxOutputLength: number; chunkSize?: number }): Buffer;
}

/** The runtime's zstd, or `undefined` where node:zlib has none (Node 20, early Node 22). */
function runtimeZstd(): ZstdApi | undefined {
  const api = zlib as unknown as Partial<ZstdApi>;
  return typeof api.zstdCompressSync === 'function' && typeof api.zstdDecompressSync === 'function'
    ? (api as ZstdApi)
    : undefined;
}

/**
 * zstd at level 1 with a 128 KiB window (a block is compressed alone; a larger window only costs
 * table set-up per call): about 450 MB/s per CPU-second on half-compressible blocks, against
 * about 95 for deflate level 1, at the same ratio (measured on Node 24, development machine).
 */
function zstdCodec(api: ZstdApi): BlockCodec {
  const { ZSTD_c_compressionLevel, ZSTD_c_windowLog } = constants as unknown as Record<string, number>;
  const params = { [ZSTD_c_compressionLevel!]: 1, [ZSTD_c_windowLog!]: 17 };
  return {
    name: 'zstd',
    id: 4,
    encode: (block) => api.zstdCompressSync(block, { params }),
    decode: zlibDecode('zstd', (payload, max) =>
      api.zstdDecompressSync(payload, { maxOutputLength: max, chunkSize: chunkSizeFor(max) }),
    ),
  };
}

const ZSTD = runtimeZstd();

const CODECS: readonly BlockCodec[] = [fflateCodec, zlibDeflateCodec, brotliCodec, ...(ZSTD ? [zstdCodec(ZSTD)] : [])];

/** The name of the adaptive default: see {@link negotiateCodec} and `CodecGovernor`. */
export const AUTO_CODEC = 'auto';

/**
 * The codecs `auto` takes, best first: zstd where both ends have it; else brotli at quality 1,
 * which on a 64 KiB block of half text and half random data (development machine, Node 20)
 * compresses 3–4× as fast as node:zlib's deflate at level 1 (174–319 against 55–75 MB/s) to a
 * smaller size (0.58 against 0.59), and on text alone as fast to 0.11 against 0.14; then the two
 * deflates, for agents that offer nothing else.
 */
const AUTO_PREFERENCE = ['zstd', 'brotli', 'zlib-deflate', 'deflate'];

/**
 * Names of the codecs this runtime offers in `hello`, `none` first; `zstd` only where node:zlib
 * has it (Node 22.15+ and 24, not Node 20).
 */
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
 * Checks a codec option (`auto`, `none` or a codec of this runtime) and returns it; throws
 * {@link @replikit/core!InputError} for an unknown name.
 */
export function checkCodecChoice(name: string): string {
  if (name === 'zstd' && !ZSTD) {
    throw new InputError(
      `codec 'zstd' needs Node 22.15 or later at both ends (this is Node ${process.versions.node}); use ${AUTO_CODEC}, which picks zstd wherever both ends have it`,
    );
  }
  if (name !== AUTO_CODEC && !availableCodecs().includes(name)) {
    throw new InputError(`unknown codec '${name}'; use ${AUTO_CODEC} or one of ${availableCodecs().join(', ')}`);
  }
  return name;
}

/** What {@link negotiateCodec} settles for one connection. */
export interface NegotiatedCodec {
  /** The codec compressed blocks use on this connection; `undefined`: none. */
  codec: BlockCodec | undefined;
  /** True when compression is switched on and off by measurement (`auto`), false when always on. */
  adaptive: boolean;
}

/**
 * Settles the codec of a connection from this side's choice and the codecs the peer offered in
 * its `hello`. `auto` takes `zstd` when both ends have it, else `brotli`, else `zlib-deflate`,
 * else `deflate` (every replikit agent offers the last three), and compresses adaptively. A codec named
 * explicitly must be offered by the peer, or the session fails with a clear error (an older
 * agent, or one on Node 20, offers no `zstd`): nothing is ever sent that the peer cannot decode.
 */
export function negotiateCodec(
  choice: string,
  peerCodecs: readonly string[],
  ours: readonly string[] = availableCodecs(),
): NegotiatedCodec {
  if (choice === 'none') return { codec: undefined, adaptive: false };
  if (choice === AUTO_CODEC) {
    const name = AUTO_PREFERENCE.find((c) => ours.includes(c) && peerCodecs.includes(c));
    return { codec: name ? codecByName(name) : undefined, adaptive: true };
  }
  if (!peerCodecs.includes(choice)) {
    // E_INPUT, not E_TRANSPORT: a reconnect cannot cure it, the job's codec must change.
    throw new InputError(
      `the peer does not offer codec '${choice}' (it offers ${peerCodecs.join(', ') || 'none'}); choose one of those, or 'auto'`,
      { details: { codec: choice, peerCodecs: [...peerCodecs] } },
    );
  }
  return { codec: codecByName(choice), adaptive: false };
}

/**
 * The default codec: `auto`, which compresses (with zstd where both ends have it, else brotli)
 * only while the link, not the CPU, is what limits the run.
 */
export const DEFAULT_CODEC = AUTO_CODEC;

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
