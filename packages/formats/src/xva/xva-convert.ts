import { open } from 'node:fs/promises';
import { extname } from 'node:path';
import { type DiskWriter, InputError, throwIfAborted, toStorageError } from '@replikit/core';
import { type ByteSource, openFileSource } from '../byte-source.js';
import type { ImageFormat } from '../image.js';
import { openDisk } from '../open-disk.js';
import { pendingOutput, refuseSameFile } from '../output-file.js';
import { createRaw } from '../raw.js';
import { createVhd } from '../vhd/vhd-writer.js';
import { createVhdx } from '../vhdx/vhdx-writer.js';
import { readXva, readXvaHeader, type XvaHeader, type XvaVdi } from './xva-reader.js';
import { type XvaVmSpec, xvaStream } from './xva-writer.js';

const PIECE = 1024 * 1024;

/** A file source read front to back, as the async stream {@link readXva} takes. */
async function* sequential(source: ByteSource, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < source.size; at += PIECE) {
    throwIfAborted(signal);
    const piece = new Uint8Array(Math.min(PIECE, source.size - at));
    await source.readInto(piece, at, 'XVA archive');
    yield piece;
  }
}

/**
 * True when `path` is to be read as an XVA: its name ends in `.xva` (it may be gzip- or
 * zstd-compressed), or it is a tar whose first entry is `ova.xml`.
 */
export async function isXvaFile(path: string): Promise<boolean> {
  if (extname(path).toLowerCase() === '.xva') return true;
  const source = await openFileSource(path);
  try {
    if (source.size < 512) return false;
    const head = new Uint8Array(8);
    await source.readInto(head, 0, 'tar header');
    return new TextDecoder().decode(head) === 'ova.xml\0';
  } finally {
    await source.close();
  }
}

/** Reads the `ova.xml` of the XVA at `path`: its VM and disks. */
export async function readXvaFileHeader(path: string): Promise<XvaHeader> {
  const source = await openFileSource(path);
  try {
    return await readXvaHeader(sequential(source), { name: path });
  } finally {
    await source.close();
  }
}

/** Options of {@link convertXvaToDisk}. */
export interface XvaToDiskOptions {
  /** The output format. */
  to: ImageFormat;
  /** The VDI to write (its `ref`, as {@link readXvaFileHeader} lists it). */
  ref: string;
  /** Block size of a VHD or VHDX output. */
  blockSize?: number;
  /** fsync the output before it replaces `output`. @default true */
  sync?: boolean;
  signal?: AbortSignal;
}

/**
 * Writes one disk of the XVA at `input` to `output` as a raw, VHD or VHDX image. Every chunk of
 * the archive is verified; the output is written beside `output` and renamed over it only when
 * the whole archive has been read, so a damaged archive leaves no output (and an existing one as
 * it was).
 */
export async function convertXvaToDisk(input: string, output: string, options: XvaToDiskOptions): Promise<XvaVdi> {
  const source = await openFileSource(input);
  try {
    await refuseSameFile({ info: { path: input } }, output);
    const sync = options.sync ?? true;
    const pending = await pendingOutput(output);
    try {
      let chosen: XvaVdi | undefined;
      const result = await readXva(sequential(source, options.signal), {
        name: input,
        openWriter: async (vdi) => {
          if (vdi.ref !== options.ref) return undefined;
          chosen = vdi;
          return createWriter(pending.path, vdi.size, options, sync);
        },
        ...(options.signal ? { signal: options.signal } : {}),
      });
      if (!chosen) {
        throw new InputError(
          `${input} has no disk ${options.ref} (it has ${result.vdis.map((v) => v.ref).join(', ') || 'none'})`,
        );
      }
      await pending.commit(sync);
      return chosen;
    } finally {
      await pending.discard();
    }
  } finally {
    await source.close();
  }
}

function createWriter(path: string, size: number, options: XvaToDiskOptions, sync: boolean): Promise<DiskWriter> {
  const blockSize = options.blockSize ? { blockSize: options.blockSize } : {};
  if (options.to === 'raw') return createRaw(path, { size, sync });
  if (options.to === 'vhd') return createVhd(path, { size, type: 'dynamic', sync, ...blockSize });
  return createVhdx(path, { size, type: 'dynamic', sync, ...blockSize, logicalSectorSize: 512 });
}

/** Options of {@link convertDiskToXva}. */
export interface DiskToXvaOptions {
  /** The VM the archive describes. */
  vm: XvaVmSpec;
  /** fsync the output before it replaces `output`. @default true */
  sync?: boolean;
  signal?: AbortSignal;
}

/**
 * Writes the disk image at `input` (raw, VHD or VHDX) as a one-disk XVA at `output`, written
 * beside it and renamed over it once complete.
 */
export async function convertDiskToXva(input: string, output: string, options: DiskToXvaOptions): Promise<void> {
  const reader = await openDisk(input, { scanRawHoles: true });
  try {
    await refuseSameFile(reader, output);
    const sync = options.sync ?? true;
    const pending = await pendingOutput(output);
    try {
      const handle = await open(pending.path, 'w');
      try {
        let at = 0;
        for await (const piece of xvaStream({
          vm: options.vm,
          disks: [{ reader }],
          ...(options.signal ? { signal: options.signal } : {}),
        })) {
          if (piece.length === 0) continue;
          await handle.write(piece, 0, piece.length, at);
          at += piece.length;
        }
        if (sync) await handle.sync();
      } catch (error) {
        throw toStorageError(error, `writing ${output}`);
      } finally {
        await handle.close();
      }
      await pending.commit(sync);
    } finally {
      await pending.discard();
    }
  } finally {
    await reader.close();
  }
}
