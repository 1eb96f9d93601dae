import { FormatError } from '@replikit/core';
import { crc32c } from '../crc32c.js';
import { Cursor, isPowerOfTwo } from '../cursor.js';
import { formatGuid, parseGuid } from '../guid.js';

const g = (text: string): Uint8Array => parseGuid(text)!;

/** Well-known VHDX GUIDs (stored in Microsoft's mixed-endian layout). */
export const VHDX_GUID = {
  bat: g('2DC27766-F623-4200-9D64-115E9BFD4A08'),
  metadata: g('8B7CA206-4790-4B9A-B8FE-575F050F886E'),
  fileParameters: g('CAA16737-FA36-4D43-B3B6-33F0AA44E76B'),
  virtualDiskSize: g('2FA54224-CD1B-4876-B211-5DBED83BF4B8'),
  page83: g('BECA12AB-B2E6-4523-93EF-C309E000C746'),
  logicalSectorSize: g('8141BF1D-A96F-4709-BA47-F233A8FAAB5F'),
  physicalSectorSize: g('CDA348C7-445D-4471-9CC9-E9885251C556'),
  parentLocator: g('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C'),
  vhdxParentType: g('B04AEFB7-D19E-4A81-B789-25B8E9445913'),
} as const;

/** One MiB: the VHDX alignment unit. */
export const MIB = 1024 * 1024;
/** The largest virtual size VHDX allows: 64 TiB. */
export const VHDX_MAX_SIZE = 64 * 1024 ** 4;
/** BAT states. */
export const BAT_STATE = {
  notPresent: 0,
  undefined: 1,
  zero: 2,
  unmapped: 3,
  unmappedOld: 5,
  fullyPresent: 6,
  partiallyPresent: 7,
} as const;

/** The fields of the current VHDX header. */
export interface VhdxHeader {
  slot: 1 | 2;
  sequenceNumber: bigint;
  fileWriteGuid: Uint8Array;
  dataWriteGuid: Uint8Array;
  logGuid: Uint8Array;
  logLength: number;
  logOffset: number;
}

/** One region table entry. */
export interface VhdxRegion {
  guid: Uint8Array;
  offset: number;
  length: number;
  required: boolean;
}

/** The metadata items replikit understands. */
export interface VhdxMetadata {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
  virtualSize: number;
  diskId: Uint8Array;
  logicalSectorSize: number;
  physicalSectorSize: number;
  parentLocator?: Map<string, string>;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/** Stores the CRC-32C of `bytes` (with the 4 bytes at `at` zeroed) at `at`, little-endian. */
export function sealCrc(bytes: Uint8Array, at: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, 0, true);
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, crc32c(bytes), true);
}

function checkCrc(c: Cursor, at: number): void {
  const stored = c.u32le(at);
  const copy = c.bytes.slice();
  new DataView(copy.buffer).setUint32(at, 0, true);
  const computed = crc32c(copy);
  if (stored !== computed) {
    throw c.error(at, `CRC-32C mismatch: stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`);
  }
}

/** Parses one 4 KiB header; throws a {@link FormatError} saying why it is not valid. */
export function parseVhdxHeader(bytes: Uint8Array, file: string, slot: 1 | 2): VhdxHeader {
  const c = new Cursor(bytes, file, `VHDX header ${slot}`, slot * 64 * 1024);
  c.expectSignature(0, 'head');
  checkCrc(c, 4);
  const logVersion = c.u16le(64);
  if (logVersion !== 0) throw c.error(64, `log version ${logVersion} is not supported (expected 0)`);
  const version = c.u16le(66);
  if (version !== 1) throw c.error(66, `version ${version} is not supported (expected 1)`);
  const logLength = c.u32le(68);
  const logOffset = c.u64le(72, 'log offset');
  if (logLength % MIB !== 0) throw c.error(68, `log length ${logLength} is not a multiple of 1 MiB`);
  if (logOffset % MIB !== 0 || logOffset < MIB) {
    throw c.error(72, `log offset ${logOffset} is not a multiple of 1 MiB of at least 1 MiB`);
  }
  return {
    slot,
    sequenceNumber: c.u64leRaw(8),
    fileWriteGuid: c.slice(16, 16).slice(),
    dataWriteGuid: c.slice(32, 16).slice(),
    logGuid: c.slice(48, 16).slice(),
    logLength,
    logOffset,
  };
}

/** Picks the current header of two candidates (either may be an error). */
export function currentHeader(
  file: string,
  h1: VhdxHeader | FormatError,
  h2: VhdxHeader | FormatError,
  raw1: Uint8Array,
  raw2: Uint8Array,
): VhdxHeader {
  if (h1 instanceof FormatError && h2 instanceof FormatError) {
    const strip = (e: FormatError) => e.message.replace(`${file}: `, '');
    throw new FormatError(`${file}: no valid VHDX header: ${strip(h1)}; ${strip(h2)}`);
  }
  if (h1 instanceof FormatError) return h2 as VhdxHeader;
  if (h2 instanceof FormatError) return h1;
  if (h1.sequenceNumber === h2.sequenceNumber) {
    if (same(raw1, raw2)) return h1;
    throw new FormatError(
      `${file}: both VHDX headers have sequence number ${h1.sequenceNumber} but differ: the file is corrupt`,
    );
  }
  return h1.sequenceNumber > h2.sequenceNumber ? h1 : h2;
}

/** Parses a 64 KiB region table. */
export function parseRegionTable(bytes: Uint8Array, file: string, base: number): VhdxRegion[] {
  const c = new Cursor(bytes, file, 'VHDX region table', base);
  c.expectSignature(0, 'regi');
  checkCrc(c, 4);
  const count = c.u32le(8);
  if (count > 2047) throw c.error(8, `${count} entries (at most 2047 allowed)`);
  const regions: VhdxRegion[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + 32 * i;
    const region = {
      guid: c.slice(at, 16).slice(),
      offset: c.u64le(at + 16, 'region offset'),
      length: c.u32le(at + 24),
      required: (c.u32le(at + 28) & 1) === 1,
    };
    if (region.offset % MIB !== 0 || region.offset < MIB || region.length % MIB !== 0 || region.length === 0) {
      throw c.error(
        at + 16,
        `region ${formatGuid(region.guid)} at ${region.offset} (${region.length} bytes) is not aligned to 1 MiB past the header section`,
      );
    }
    const known = same(region.guid, VHDX_GUID.bat) || same(region.guid, VHDX_GUID.metadata);
    if (!known && region.required) {
      throw c.error(at, `unknown required region ${formatGuid(region.guid)}: this VHDX needs a newer reader`);
    }
    if (regions.some((r) => same(r.guid, region.guid))) {
      throw c.error(at, `region ${formatGuid(region.guid)} appears twice`);
    }
    regions.push(region);
  }
  return regions;
}

/** Parses the metadata region (its bytes) and checks every item. */
export function parseMetadata(bytes: Uint8Array, file: string, base: number): VhdxMetadata {
  const c = new Cursor(bytes, file, 'VHDX metadata table', base);
  c.expectSignature(0, 'metadata');
  const count = c.u16le(10);
  if (count > 2047) throw c.error(10, `${count} entries (at most 2047 allowed)`);
  const items = new Map<string, Cursor>();
  const known = [
    VHDX_GUID.fileParameters,
    VHDX_GUID.virtualDiskSize,
    VHDX_GUID.page83,
    VHDX_GUID.logicalSectorSize,
    VHDX_GUID.physicalSectorSize,
    VHDX_GUID.parentLocator,
  ];
  for (let i = 0; i < count; i++) {
    const at = 32 + 32 * i;
    const id = c.slice(at, 16);
    const offset = c.u32le(at + 16);
    const length = c.u32le(at + 20);
    const flags = c.u32le(at + 24);
    const name = formatGuid(id);
    if (length > MIB) throw c.error(at + 20, `item ${name} is ${length} bytes long (at most 1 MiB allowed)`);
    if (length > 0 && offset < 64 * 1024) throw c.error(at + 16, `item ${name} starts at ${offset}, inside the table`);
    if (offset + length > bytes.length) {
      throw c.error(at + 16, `item ${name} (${length} bytes at ${offset}) ends past the metadata region`);
    }
    const isKnown = known.some((k) => same(k, id));
    if (!isKnown) {
      if (flags & 4) throw c.error(at, `unknown required metadata item ${name}: this VHDX needs a newer reader`);
      continue;
    }
    if (items.has(name)) throw c.error(at, `metadata item ${name} appears twice`);
    items.set(name, new Cursor(c.slice(offset, length), file, `VHDX metadata item ${name}`, base + offset));
  }
  const item = (guid: Uint8Array, what: string, minLength: number): Cursor => {
    const found = items.get(formatGuid(guid));
    if (!found) throw new FormatError(`${file}: VHDX metadata lacks the required ${what} item`);
    if (found.length < minLength) throw found.error(0, `${what} item is ${found.length} bytes, expected ${minLength}`);
    return found;
  };
  const params = item(VHDX_GUID.fileParameters, 'file parameters', 8);
  const blockSize = params.u32le(0);
  if (!isPowerOfTwo(blockSize) || blockSize < MIB || blockSize > 256 * MIB) {
    throw params.error(0, `block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`);
  }
  const paramFlags = params.u32le(4);
  const logical = item(VHDX_GUID.logicalSectorSize, 'logical sector size', 4);
  const logicalSectorSize = logical.u32le(0);
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) {
    throw logical.error(0, `logical sector size ${logicalSectorSize} (expected 512 or 4096)`);
  }
  const physical = item(VHDX_GUID.physicalSectorSize, 'physical sector size', 4);
  const physicalSectorSize = physical.u32le(0);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) {
    throw physical.error(0, `physical sector size ${physicalSectorSize} (expected 512 or 4096)`);
  }
  const sizeItem = item(VHDX_GUID.virtualDiskSize, 'virtual disk size', 8);
  const virtualSize = sizeItem.u64le(0, 'virtual disk size');
  if (virtualSize > VHDX_MAX_SIZE || virtualSize % logicalSectorSize !== 0) {
    throw sizeItem.error(
      0,
      `virtual size ${virtualSize} is not a multiple of the ${logicalSectorSize}-byte sector up to 64 TiB`,
    );
  }
  const diskId = item(VHDX_GUID.page83, 'virtual disk id', 16).slice(0, 16).slice();
  const metadata: VhdxMetadata = {
    blockSize,
    leaveBlocksAllocated: (paramFlags & 1) === 1,
    hasParent: (paramFlags & 2) === 2,
    virtualSize,
    diskId,
    logicalSectorSize,
    physicalSectorSize,
  };
  if (metadata.hasParent) {
    metadata.parentLocator = parseParentLocator(item(VHDX_GUID.parentLocator, 'parent locator', 20));
  }
  return metadata;
}

function parseParentLocator(c: Cursor): Map<string, string> {
  if (!same(c.slice(0, 16), VHDX_GUID.vhdxParentType)) {
    throw c.error(0, `parent locator type ${formatGuid(c.slice(0, 16))} is not the VHDX parent type`);
  }
  const count = c.u16le(18);
  const map = new Map<string, string>();
  const text = (offset: number, length: number) => new TextDecoder('utf-16le').decode(c.slice(offset, length));
  for (let i = 0; i < count; i++) {
    const at = 20 + 12 * i;
    const key = text(c.u32le(at), c.u16le(at + 8));
    const value = text(c.u32le(at + 4), c.u16le(at + 10));
    map.set(key, value);
  }
  if (!map.has('parent_linkage')) throw c.error(0, 'parent locator lacks the required parent_linkage key');
  return map;
}

/** Entries in the BAT of a disk: see MS-VHDX 2.5. */
export function batGeometry(m: Pick<VhdxMetadata, 'blockSize' | 'logicalSectorSize' | 'virtualSize' | 'hasParent'>) {
  const chunkRatio = (2 ** 23 * m.logicalSectorSize) / m.blockSize;
  const dataBlocks = Math.ceil(m.virtualSize / m.blockSize);
  const bitmapBlocks = Math.ceil(dataBlocks / chunkRatio);
  const entries = m.hasParent
    ? bitmapBlocks * (chunkRatio + 1)
    : dataBlocks === 0
      ? 0
      : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  return { chunkRatio, dataBlocks, bitmapBlocks, entries };
}
