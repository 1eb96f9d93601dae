import { FormatError } from '@replikit/core';
import { Cursor, isPowerOfTwo, printable } from '../cursor.js';

/** VHD disk types (footer field at byte 60). */
export const VHD_TYPE = { fixed: 2, dynamic: 3, differencing: 4 } as const;
/** Seconds from the Unix epoch to the VHD epoch (2000-01-01T00:00:00Z). */
export const VHD_EPOCH = 946_684_800;
/** The largest VHD: 0xFF000000 sectors (2040 GiB). */
export const VHD_MAX_SIZE = 0xff000000 * 512;
/** The largest geometry, 65535 × 16 × 255 sectors; at it readers use the footer's current size. */
export const VHD_MAX_GEOMETRY = 65535 * 16 * 255;
/** Unallocated BAT entry. */
export const VHD_BAT_FREE = 0xffffffff;
/** Parent locator platform codes. */
export const PLATFORM = { W2ru: 0x57327275, W2ku: 0x57326b75, MacX: 0x4d616358 } as const;

/** The fields of a VHD footer that replikit uses. */
export interface VhdFooter {
  features: number;
  dataOffset: bigint;
  timestamp: number;
  creatorApp: string;
  creatorVersion: number;
  creatorHostOs: number;
  originalSize: number;
  currentSize: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  uniqueId: Uint8Array;
  savedState: number;
}

/** One parent locator entry of a dynamic header. */
export interface VhdParentLocator {
  platformCode: number;
  dataSpace: number;
  dataLength: number;
  dataOffset: number;
}

/** The fields of a dynamic disk header. */
export interface VhdHeader {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
  parentUniqueId: Uint8Array;
  parentTimestamp: number;
  parentName: string;
  locators: VhdParentLocator[];
}

/** One's complement of the byte sum of `bytes`, with the 4 bytes at `skip` counted as zero. */
export function vhdChecksum(bytes: Uint8Array, skip: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) if (i < skip || i >= skip + 4) sum += bytes[i]!;
  return ~sum >>> 0;
}

/** The CHS geometry of the VHD specification's appendix for a disk of `size` bytes. */
export function vhdGeometry(size: number): { cylinders: number; heads: number; sectorsPerTrack: number } {
  const total = Math.min(Math.floor(size / 512), 65535 * 16 * 255);
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.max(4, Math.floor((cth + 1023) / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

/** Parses and checks a 512-byte footer. */
export function parseVhdFooter(bytes: Uint8Array, file: string, base: number): VhdFooter {
  const c = new Cursor(bytes, file, 'VHD footer', base);
  c.expectSignature(0, 'conectix');
  const stored = c.u32be(64);
  const computed = vhdChecksum(c.slice(0, 512), 64);
  if (stored !== computed) {
    throw c.error(64, `checksum mismatch: stored 0x${hex(stored)}, computed 0x${hex(computed)}`);
  }
  const version = c.u32be(12);
  if (version >>> 16 !== 1) throw c.error(12, `unsupported format version 0x${hex(version)} (expected 0x00010000)`);
  const diskType = c.u32be(60);
  if (diskType !== 2 && diskType !== 3 && diskType !== 4) {
    throw c.error(60, `unsupported disk type ${diskType} (expected 2 fixed, 3 dynamic or 4 differencing)`);
  }
  const footer: VhdFooter = {
    features: c.u32be(8),
    dataOffset: c.u64beRaw(16),
    timestamp: c.u32be(24),
    creatorApp: c.ascii(28, 4),
    creatorVersion: c.u32be(32),
    creatorHostOs: c.u32be(36),
    originalSize: c.u64be(40, 'original size'),
    currentSize: c.u64be(48, 'current size'),
    cylinders: c.u16be(56),
    heads: c.u8(58),
    sectorsPerTrack: c.u8(59),
    diskType,
    uniqueId: c.slice(68, 16).slice(),
    savedState: c.u8(84),
  };
  if (footer.currentSize > VHD_MAX_SIZE * 2) {
    throw c.error(48, `current size ${footer.currentSize} is larger than any VHD can be`);
  }
  return footer;
}

/**
 * The virtual size the way other tools read it: Virtual PC and qemu's own files ('vpc ', 'qemu')
 * take it from the CHS geometry, everyone else (Hyper-V, XenServer, qemu's force_size 'qem2')
 * from the footer's current size; at the maximum geometry the current size always wins.
 */
export function vhdVirtualSize(footer: VhdFooter): number {
  const chs = footer.cylinders * footer.heads * footer.sectorsPerTrack;
  if ((footer.creatorApp === 'vpc ' || footer.creatorApp === 'qemu') && chs !== VHD_MAX_GEOMETRY && chs > 0) {
    return chs * 512;
  }
  return footer.currentSize;
}

/** Builds a 512-byte footer (checksum included). */
export function buildVhdFooter(f: {
  diskType: number;
  size: number;
  uniqueId: Uint8Array;
  timestamp?: number;
  dataOffset: bigint;
}): Uint8Array {
  const bytes = new Uint8Array(512);
  const v = new DataView(bytes.buffer);
  bytes.set(ascii('conectix'), 0);
  v.setUint32(8, 2);
  v.setUint32(12, 0x00010000);
  v.setBigUint64(16, f.dataOffset);
  v.setUint32(24, f.timestamp ?? vhdNow());
  // 'win ' (Hyper-V): every reader, older qemu included, then takes the exact current size
  // rather than the CHS geometry, which cannot represent most sizes
  bytes.set(ascii('win '), 28);
  v.setUint32(32, 0x000a0000);
  v.setUint32(36, 0x5769326b); // Wi2k
  v.setBigUint64(40, BigInt(f.size));
  v.setBigUint64(48, BigInt(f.size));
  const g = vhdGeometry(f.size);
  v.setUint16(56, g.cylinders);
  v.setUint8(58, g.heads);
  v.setUint8(59, g.sectorsPerTrack);
  v.setUint32(60, f.diskType);
  bytes.set(f.uniqueId, 68);
  v.setUint32(64, vhdChecksum(bytes, 64));
  return bytes;
}

/** Parses and checks a 1024-byte dynamic disk header. */
export function parseVhdHeader(bytes: Uint8Array, file: string, base: number): VhdHeader {
  const c = new Cursor(bytes, file, 'VHD dynamic header', base);
  c.expectSignature(0, 'cxsparse');
  const stored = c.u32be(36);
  const computed = vhdChecksum(c.slice(0, 1024), 36);
  if (stored !== computed) {
    throw c.error(36, `checksum mismatch: stored 0x${hex(stored)}, computed 0x${hex(computed)}`);
  }
  const blockSize = c.u32be(32);
  if (!isPowerOfTwo(blockSize) || blockSize < 512) {
    throw c.error(32, `block size ${blockSize} is not a power of two of at least 512 bytes`);
  }
  const nameBytes = c.slice(64, 512);
  let parentName = '';
  for (let i = 0; i + 1 < nameBytes.length; i += 2) {
    const code = (nameBytes[i]! << 8) | nameBytes[i + 1]!;
    if (code === 0) break;
    parentName += String.fromCharCode(code);
  }
  const locators: VhdParentLocator[] = [];
  for (let i = 0; i < 8; i++) {
    const at = 576 + 24 * i;
    const platformCode = c.u32be(at);
    if (platformCode === 0) continue;
    locators.push({
      platformCode,
      dataSpace: c.u32be(at + 4),
      dataLength: c.u32be(at + 8),
      dataOffset: c.u64be(at + 16, 'parent locator data offset'),
    });
  }
  return {
    tableOffset: c.u64be(16, 'table offset'),
    maxTableEntries: c.u32be(28),
    blockSize,
    parentUniqueId: c.slice(40, 16).slice(),
    parentTimestamp: c.u32be(56),
    parentName,
    locators,
  };
}

/** Builds a 1024-byte dynamic header (checksum included). */
export function buildVhdHeader(h: {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
  parent?: { uniqueId: Uint8Array; timestamp: number; name: string; locators: VhdParentLocator[] };
}): Uint8Array {
  const bytes = new Uint8Array(1024);
  const v = new DataView(bytes.buffer);
  bytes.set(ascii('cxsparse'), 0);
  v.setBigUint64(8, 0xffffffffffffffffn);
  v.setBigUint64(16, BigInt(h.tableOffset));
  v.setUint32(24, 0x00010000);
  v.setUint32(28, h.maxTableEntries);
  v.setUint32(32, h.blockSize);
  if (h.parent) {
    bytes.set(h.parent.uniqueId, 40);
    v.setUint32(56, h.parent.timestamp);
    const name = h.parent.name.slice(0, 255);
    for (let i = 0; i < name.length; i++) v.setUint16(64 + 2 * i, name.charCodeAt(i));
    h.parent.locators.slice(0, 8).forEach((l, i) => {
      const at = 576 + 24 * i;
      v.setUint32(at, l.platformCode);
      v.setUint32(at + 4, l.dataSpace);
      v.setUint32(at + 8, l.dataLength);
      v.setBigUint64(at + 16, BigInt(l.dataOffset));
    });
  }
  v.setUint32(36, vhdChecksum(bytes, 36));
  return bytes;
}

/** Bytes of the sector bitmap in front of each block: one bit per sector, padded to 512. */
export function vhdBitmapSize(blockSize: number): number {
  return Math.ceil(blockSize / 512 / 8 / 512) * 512;
}

/** Now, in seconds since the VHD epoch. */
export function vhdNow(): number {
  return Math.max(0, Math.floor(Date.now() / 1000) - VHD_EPOCH) >>> 0;
}

/** Latin-1 bytes of `text`. */
export function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (ch) => ch.charCodeAt(0));
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/** Decodes a UTF-16 parent locator path. */
export function decodeUtf16le(bytes: Uint8Array): string {
  return new TextDecoder('utf-16le').decode(bytes).replace(/\0+$/, '');
}

/** Checks a locator's data range is inside the file; returns it in bytes. */
export function locatorRange(l: VhdParentLocator, fileSize: number, file: string): { offset: number; length: number } {
  if (l.dataLength > 4096 || l.dataOffset + l.dataLength > fileSize) {
    throw new FormatError(
      `${file}: parent locator '${printable(String.fromCharCode((l.platformCode >>> 24) & 255, (l.platformCode >>> 16) & 255, (l.platformCode >>> 8) & 255, l.platformCode & 255))}' data (${l.dataLength} bytes at ${l.dataOffset}) is outside the file or longer than 4096 bytes`,
    );
  }
  return { offset: l.dataOffset, length: l.dataLength };
}
