/**
 * `@replikit/formats`: disk image formats in pure TypeScript. Readers and writers of raw, VHD
 * (fixed, dynamic, differencing) and VHDX (fixed, dynamic, differencing) images, a VHD stream
 * writer, XVA (XenServer VM export) streams, format detection, conversion, comparison and
 * checks, all proven against qemu-img.
 *
 * @packageDocumentation
 */
export { type ByteSource, isZero, memorySource, openFileSource } from './byte-source.js';
export { type CheckReport, checkImage } from './check.js';
export { type CompareResult, compareDisks } from './compare.js';
export {
  type ConvertOptions,
  type CopyDiskOptions,
  type CopyProgress,
  convertDisk,
  copyDisk,
} from './convert.js';
export { crc32c } from './crc32c.js';
export type { RandomAccessFile } from './file-io.js';
export type { ImageFormat, ImageInfo, ImageReader } from './image.js';
export {
  type ImageKind,
  identifyImage,
  identifyImageBytes,
  MAGIC_HEAD_BYTES,
  unreadableImageError,
} from './image-magic.js';
export { detectFormat, type OpenDiskOptions, openDisk, openSource } from './open-disk.js';
export type { ParentOptions } from './parent.js';
export { createRaw, openRaw, RAW_GRANULE, RawReader, type RawWriter } from './raw.js';
export type { VhdParentRef } from './vhd/vhd-layout.js';
export { openVhd, openVhdSource, VhdReader } from './vhd/vhd-reader.js';
export { type VhdStreamOptions, vhdStream, vhdStreamLength } from './vhd/vhd-stream.js';
export { type VhdFooter, type VhdHeader, type VhdParentLocator, vhdGeometry } from './vhd/vhd-structs.js';
export { type CreateVhdOptions, createVhd, type VhdWriter, vhdParentRef } from './vhd/vhd-writer.js';
export { openVhdx, openVhdxSource, VhdxReader } from './vhdx/vhdx-reader.js';
export type { VhdxHeader, VhdxMetadata } from './vhdx/vhdx-structs.js';
export { type CreateVhdxOptions, createVhdx, type VhdxWriter } from './vhdx/vhdx-writer.js';
export { type ChunkPlace, ChunkPlacer, type PlacedVdi } from './xva/chunk-placement.js';
export { decompressXva, type XvaCompression } from './xva/decompress.js';
export { NULL_REF, OVA_REQUIRED_FIELDS } from './xva/ova-datamodel.js';
export { decodeXapi, encodeXapi, type XapiValue } from './xva/ova-xml.js';
export { parseTarHeader, TAR_BLOCK, type TarEntry, tarHeader, tarPadding } from './xva/tar.js';
export {
  convertDiskToXva,
  convertXvaToDisk,
  type DiskToXvaOptions,
  isXvaFile,
  readXvaFileHeader,
  type XvaToDiskOptions,
} from './xva/xva-convert.js';
export {
  parseOvaXml,
  type ReadXvaHeaderOptions,
  type ReadXvaOptions,
  readXva,
  readXvaHeader,
  type XvaContents,
  type XvaHeader,
  type XvaVdi,
} from './xva/xva-reader.js';
export {
  buildOvaXml,
  chunkName,
  type OvaDisk,
  XVA_CHUNK,
  type XvaDiskSource,
  type XvaStreamOptions,
  type XvaVmSpec,
  xvaStream,
} from './xva/xva-writer.js';
