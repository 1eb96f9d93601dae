import { FormatError } from '@replikit/core';
import { type ByteSource, readBytes } from './byte-source.js';

/** What the signatures of an image file say it is. */
export interface ImageKind {
  /**
   * The format, by qemu-img's name for it: `raw`, `vhd`, `vhdx` (read by replikit), or `qcow`,
   * `qcow2`, `qed`, `vmdk`, `vdi`, `parallels`, `luks`, `xva`, `gzip`, `xz`, `zstd`, `bzip2`.
   */
  format: string;
  /** True for the formats replikit reads (`raw`, `vhd`, `vhdx`). */
  readable: boolean;
  /** The format in words (`a QEMU qcow2 image`). */
  description: string;
  /** For the others: how to turn the file into a raw image (`<in>` and `<out.raw>` stand for the files). */
  howToConvert?: string;
}

/** Bytes of the head of a file {@link identifyImageBytes} looks at (the ISO 9660 descriptor ends at 0x8006). */
export const MAGIC_HEAD_BYTES = 0x8006;

const latin1 = new TextDecoder('latin1');

function text(bytes: Uint8Array, offset: number, length: number): string {
  return latin1.decode(bytes.subarray(offset, offset + length));
}

function qemuConvert(format: string): string {
  return `qemu-img convert -f ${format} -O raw <in> <out.raw>`;
}

function foreign(format: string, description: string, howToConvert = qemuConvert(format)): ImageKind {
  return { format, readable: false, description, howToConvert };
}

const RAW: ImageKind = { format: 'raw', readable: true, description: 'a raw disk image' };

/**
 * Tells what an image file is from its signatures: `head` is its first bytes (up to
 * {@link MAGIC_HEAD_BYTES}), `tail` its last 512 bytes when the file is at least that long. A file
 * without a known signature is raw (an ISO 9660 image is raw data too, as qemu-img sees it).
 */
export function identifyImageBytes(head: Uint8Array, tail?: Uint8Array): ImageKind {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const u32be = (at: number) => (head.length >= at + 4 ? view.getUint32(at, false) : -1);
  const u32le = (at: number) => (head.length >= at + 4 ? view.getUint32(at, true) : -1);
  const start = text(head, 0, 8);
  if (start === 'vhdxfile') return { format: 'vhdx', readable: true, description: 'a VHDX image' };
  if (start === 'conectix') return { format: 'vhd', readable: true, description: 'a VHD image' };
  if (start.startsWith('QFI\xfb')) {
    return u32be(4) === 1
      ? foreign('qcow', 'a QEMU qcow (version 1) image')
      : foreign('qcow2', `a QEMU qcow2 image (version ${u32be(4)})`);
  }
  if (start.startsWith('QED\0')) return foreign('qed', 'a QEMU QED image');
  if (start.startsWith('KDMV')) return foreign('vmdk', 'a VMware VMDK sparse image');
  if (start.startsWith('COWD')) return foreign('vmdk', 'a VMware ESX VMDK sparse image');
  if (text(head, 0, 21) === '# Disk DescriptorFile') {
    return foreign('vmdk', 'a VMware VMDK descriptor (it names the extent files that hold the data)');
  }
  if (start.startsWith('<<< ') && u32le(0x40) === 0xbeda107f) return foreign('vdi', 'a VirtualBox VDI image');
  if (text(head, 0, 16) === 'WithoutFreeSpace' || text(head, 0, 16) === 'WithouFreSpacExt') {
    return foreign('parallels', 'a Parallels disk image');
  }
  if (start.startsWith('LUKS\xba\xbe')) {
    return foreign(
      'luks',
      'a LUKS-encrypted volume (its disk is the decrypted content)',
      'qemu-img convert --object secret,id=key,file=<passphrase file> --image-opts driver=luks,key-secret=key,file.filename=<in> -O raw <out.raw>',
    );
  }
  if (text(head, 0, 8) === 'ova.xml\0' && /^[0-7 \0]{8}$/.test(text(head, 148, 8))) {
    return foreign(
      'xva',
      'a XenServer VM export (XVA)',
      'replikit disk convert <in> <out.raw> (with --disk N when it holds several disks)',
    );
  }
  if (head[0] === 0x1f && head[1] === 0x8b && head[2] === 8) {
    return foreign('gzip', 'a gzip-compressed file', 'decompress it first: gzip -dc <in> > <out.raw>');
  }
  if (start.startsWith('\xfd7zXZ\0')) {
    return foreign('xz', 'an xz-compressed file', 'decompress it first: xz -dc <in> > <out.raw>');
  }
  if (u32le(0) === 0xfd2fb528) {
    return foreign('zstd', 'a zstd-compressed file', 'decompress it first: zstd -dc <in> > <out.raw>');
  }
  if (/^BZh[1-9]$/.test(text(head, 0, 4)) && (text(head, 4, 6) === '1AY&SY' || text(head, 4, 6) === '\x17rE8P\x90')) {
    return foreign('bzip2', 'a bzip2-compressed file', 'decompress it first: bzip2 -dc <in> > <out.raw>');
  }
  if (tail && tail.length >= 8 && text(tail, 0, 8) === 'conectix') {
    return { format: 'vhd', readable: true, description: 'a VHD image' };
  }
  return RAW;
}

/** {@link identifyImageBytes} over a {@link ByteSource}. */
export async function identifyImage(source: ByteSource): Promise<ImageKind> {
  const head = await readBytes(source, 0, Math.min(source.size, MAGIC_HEAD_BYTES), 'signature');
  const tail = source.size >= 512 ? await readBytes(source, source.size - 512, 512, 'signature') : undefined;
  return identifyImageBytes(head, tail);
}

/**
 * The error for a file of a format replikit does not read: one line saying what the file is and
 * the command that converts it to raw.
 */
export function unreadableImageError(path: string, kind: ImageKind): FormatError {
  const how = (kind.howToConvert ?? qemuConvert(kind.format)).replace('<in>', path);
  const compressed = /^(gzip|xz|zstd|bzip2)$/.test(kind.format);
  const noun = compressed ? `${kind.format}-compressed file` : kind.description.replace(/^an? /, '');
  return new FormatError(
    `${path} is ${compressed ? `a ${noun}` : kind.description}, which replikit does not read as a disk ` +
      `(only raw, VHD and VHDX); ${compressed ? how : `convert it to raw first: ${how}`}`,
    { details: { file: path, format: kind.format } },
  );
}
