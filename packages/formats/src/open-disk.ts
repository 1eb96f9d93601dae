import { type ByteSource, openFileSource } from './byte-source.js';
import type { ImageFormat, ImageReader } from './image.js';
import { identifyImage, unreadableImageError } from './image-magic.js';
import type { ParentOptions } from './parent.js';
import { RawReader } from './raw.js';
import { openVhdSource } from './vhd/vhd-reader.js';
import { openVhdxSource } from './vhdx/vhdx-reader.js';

/**
 * Tells the format of an image from its signatures: `vhdxfile`, `conectix` at 0 or at the end,
 * else raw.
 *
 * @throws {@link @replikit/core!FormatError} for a file of a known format replikit does not read
 * (qcow2, VMDK, VDI, QED, LUKS, a compressed file…), saying what it is and how to convert it.
 */
export async function detectFormat(source: ByteSource): Promise<ImageFormat> {
  const kind = await identifyImage(source);
  if (!kind.readable) throw unreadableImageError(source.name, kind);
  return kind.format as ImageFormat;
}

/** Options of {@link openDisk}. */
export interface OpenDiskOptions extends ParentOptions {
  /** Skips detection and opens the file as this format. */
  format?: ImageFormat;
  /**
   * For raw images: find holes by reading the file in `allocated()`. Turn it off when the caller
   * skips zeroes itself (convert, compare), so the file is read once.
   * @default true
   */
  scanRawHoles?: boolean;
}

/**
 * Opens a disk image of any supported format (raw, VHD, VHDX), detected from its content, and
 * returns a {@link ImageReader}. A differencing image opens its parents.
 *
 * @example
 * ```ts
 * const disk = await openDisk('/images/web.vhdx');
 * console.log(disk.info.format, disk.size);
 * for await (const extent of disk.allocated()) console.log(extent);
 * await disk.close();
 * ```
 */
export async function openDisk(path: string, options: OpenDiskOptions = {}): Promise<ImageReader> {
  const source = await openFileSource(path);
  try {
    return await openSource(source, options);
  } catch (error) {
    await source.close();
    throw error;
  }
}

/** {@link openDisk} over any {@link ByteSource} (in-memory images, tests). */
export async function openSource(source: ByteSource, options: OpenDiskOptions = {}): Promise<ImageReader> {
  const format = options.format ?? (await detectFormat(source));
  switch (format) {
    case 'vhdx':
      return openVhdxSource(source, options);
    case 'vhd':
      return openVhdSource(source, options);
    default:
      return new RawReader(source, undefined, options.scanRawHoles ?? true);
  }
}
