import type { FileHandle } from 'node:fs/promises';
import { FormatError, toStorageError } from '@replikit/core';
import { identifyImageBytes, MAGIC_HEAD_BYTES } from '@replikit/formats';
import { readFully } from './block-io.js';
import { openDataFile, READ } from './data-file.js';

/** Signatures a guest may well write at the start of its own raw disk: they never refuse a disk. */
const GUEST_CONTENT = new Set(['raw', 'luks', 'gzip', 'xz', 'zstd', 'bzip2']);

/**
 * Checks from its signatures that the image `path` of disk `diskId` is a raw image: a qcow2, VMDK,
 * VDI, QED, VHD or VHDX file would be copied as its container's bytes, not as the disk it holds.
 * A LUKS header, an ISO 9660 volume or a compressed stream is content a guest may well write on
 * its raw disk (a backup written straight to a data disk, say), and their 2–6 byte signatures are
 * too weak to refuse a VM for, so they pass.
 *
 * @throws {@link @replikit/core!FormatError} naming the disk, the file, what it is and how to convert it.
 */
export async function assertRawImage(path: string, diskId: string): Promise<void> {
  let fh: FileHandle | undefined;
  let kind: ReturnType<typeof identifyImageBytes>;
  try {
    fh = await openDataFile(path, READ, { what: `disk '${diskId}'` });
    const { size } = await fh.stat();
    const head = new Uint8Array(Math.min(size, MAGIC_HEAD_BYTES));
    await readFully(fh, head, 0, head.length, 0);
    const tail = new Uint8Array(size >= 512 ? 512 : 0);
    if (tail.length > 0) await readFully(fh, tail, 0, 512, size - 512);
    kind = identifyImageBytes(head, tail.length > 0 ? tail : undefined);
  } catch (error) {
    throw toStorageError(error, `reading the head of ${path}`);
  } finally {
    await fh?.close().catch(() => undefined);
  }
  if (GUEST_CONTENT.has(kind.format)) return;
  const how = (kind.howToConvert ?? 'replikit disk convert <in> <out.raw> --to raw').replace('<in>', path);
  throw new FormatError(
    `disk '${diskId}': image ${path} is ${kind.description}, not a raw image, the only kind the file driver reads; ` +
      `convert it (${how}) and put the raw file in its place`,
    { details: { diskId, path, format: kind.format } },
  );
}
