import { type DiskWriter, FormatError, throwIfAborted } from '@replikit/core';
import { isZero } from '../byte-source.js';
import { printable } from '../cursor.js';
import { checksumKind, verifyChunk } from './chunk-checksum.js';
import { ChunkPlacer } from './chunk-placement.js';
import { decompressXva, type XvaCompression } from './decompress.js';
import { decodeXapi, type XapiValue } from './ova-xml.js';
import { parseTarHeader, TAR_BLOCK, type TarEntry } from './tar.js';
import { XVA_CHUNK } from './xva-writer.js';

/** A VDI described by an XVA's `ova.xml`. */
export interface XvaVdi {
  /** Its reference inside the archive (`Ref:10`): the folder of its chunks. */
  ref: string;
  uuid: string;
  name: string;
  /** Virtual size in bytes. */
  size: number;
}

/** What {@link readXva} found. */
export interface XvaContents {
  /** The VM record (`snapshot` of the VM object), as decoded. */
  vm: Record<string, XapiValue>;
  /** The VDIs, in `ova.xml` order. */
  vdis: XvaVdi[];
  /** Chunk files read and verified (keep-alive chunks included). */
  chunks: number;
  /** How the archive was compressed. */
  compression: XvaCompression;
}

/** Options of {@link readXva}. */
export interface ReadXvaOptions {
  /**
   * Opens the writer a VDI's content goes to (a fresh, zeroed disk of `vdi.size` bytes), or
   * `undefined` to verify that VDI's chunks without keeping them. Writers are closed by readXva.
   */
  openWriter(vdi: XvaVdi): Promise<DiskWriter | undefined>;
  /** Name of the archive, for messages. @default 'xva' */
  name?: string;
  /**
   * Largest `ova.xml` accepted.
   * @default 16 MiB
   */
  maxOvaXml?: number;
  signal?: AbortSignal;
}

/** Pulls exact byte counts out of an async stream of chunks. */
class ByteQueue {
  private buffered: Uint8Array[] = [];
  private available = 0;
  /** Bytes consumed so far. */
  position = 0;
  private readonly iterator: AsyncIterator<Uint8Array>;
  private done = false;
  constructor(source: AsyncIterable<Uint8Array>) {
    this.iterator = source[Symbol.asyncIterator]();
  }
  /** Exactly `n` bytes, or fewer when the stream ends first. */
  async read(n: number): Promise<Uint8Array> {
    while (this.available < n && !this.done) {
      const next = await this.iterator.next();
      if (next.done) this.done = true;
      else if (next.value.length > 0) {
        this.buffered.push(next.value);
        this.available += next.value.length;
      }
    }
    const take = Math.min(n, this.available);
    const first = this.buffered[0];
    let out: Uint8Array;
    if (first && first.length >= take) {
      out = first.subarray(0, take);
      if (first.length === take) this.buffered.shift();
      else this.buffered[0] = first.subarray(take);
    } else {
      out = new Uint8Array(take);
      let at = 0;
      while (at < take) {
        const piece = this.buffered[0]!;
        const n2 = Math.min(piece.length, take - at);
        out.set(piece.subarray(0, n2), at);
        at += n2;
        if (n2 === piece.length) this.buffered.shift();
        else this.buffered[0] = piece.subarray(n2);
      }
    }
    this.available -= take;
    this.position += take;
    return out;
  }
  async close(): Promise<void> {
    if (!this.done) await this.iterator.return?.();
  }
}

/** A chunk file's name: the VDI's folder, then its number (XAPI writes 8 digits). */
const CHUNK_NAME = /^(.+)\/(\d{1,9})$/;

function asString(v: XapiValue | undefined): string {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '';
}

const isRecord = (v: XapiValue | undefined): v is Record<string, XapiValue> =>
  typeof v === 'object' && !Array.isArray(v);

/**
 * Finds the VM and VDI records of a decoded `ova.xml`. VDIs attached only through CD drives are
 * left out: XAPI streams no data for them (ocaml/xapi/import.ml `non_cdrom_vdis`).
 */
export function parseOvaXml(xml: string, file: string): { vm: Record<string, XapiValue>; vdis: XvaVdi[] } {
  const doc = decodeXapi(xml, file);
  const objects = isRecord(doc) ? doc.objects : undefined;
  if (!Array.isArray(objects)) throw new FormatError(`${file}: ova.xml has no 'objects' list`);
  let vm: Record<string, XapiValue> | undefined;
  const vdis: XvaVdi[] = [];
  const cdVdis = new Set<string>();
  for (const o of objects) {
    if (!isRecord(o) || !isRecord(o.snapshot)) continue;
    if (o.class === 'VBD' && asString(o.snapshot.type).toLowerCase() === 'cd') cdVdis.add(asString(o.snapshot.VDI));
  }
  for (const o of objects) {
    if (!isRecord(o)) continue;
    const snapshot = o.snapshot;
    if (!isRecord(snapshot)) continue;
    if (o.class === 'VM' && !vm) vm = snapshot;
    if (o.class === 'VDI' && !cdVdis.has(asString(o.id))) {
      const sizeText = asString(snapshot.virtual_size);
      const size = Number(sizeText);
      if (!/^\d+$/.test(sizeText) || !Number.isSafeInteger(size)) {
        throw new FormatError(
          `${file}: ova.xml VDI ${printable(asString(o.id))} has virtual_size '${printable(sizeText)}'`,
        );
      }
      const ref = asString(o.id);
      if (ref === '' || vdis.some((v) => v.ref === ref)) {
        throw new FormatError(`${file}: ova.xml has a VDI without a unique id ('${printable(ref)}')`);
      }
      vdis.push({ ref, uuid: asString(snapshot.uuid), name: asString(snapshot.name_label), size });
    }
  }
  if (!vm) throw new FormatError(`${file}: ova.xml has no VM object`);
  return { vm, vdis };
}

/** Options of {@link readXvaHeader}. */
export interface ReadXvaHeaderOptions {
  /** Name of the archive, for messages. @default 'xva' */
  name?: string;
  /** Largest `ova.xml` accepted. @default 16 MiB */
  maxOvaXml?: number;
}

/** An open archive: its byte queue (decompressed), a tar entry reader and its ova.xml. */
interface OpenArchive {
  q: ByteQueue;
  next(): Promise<TarEntry | undefined>;
  body(size: number, what: string): Promise<Uint8Array>;
  contents: { vm: Record<string, XapiValue>; vdis: XvaVdi[] };
  compression: XvaCompression;
}

async function openArchive(source: AsyncIterable<Uint8Array>, file: string, maxXml: number): Promise<OpenArchive> {
  let compression: XvaCompression = 'none';
  const q = new ByteQueue(decompressXva(source, file, (c) => (compression = c)));
  const body = async (size: number, what: string): Promise<Uint8Array> => {
    const data = await q.read(size);
    if (data.length < size) throw new FormatError(`${file}: ${what} is cut short: the archive is truncated`);
    const pad = (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
    if ((await q.read(pad)).length < pad)
      throw new FormatError(`${file}: ${what} is cut short: the archive is truncated`);
    return data;
  };
  /** The next regular file's header (GNU long names and pax paths applied), `undefined` at the end. */
  const next = async (): Promise<TarEntry | undefined> => {
    let longName: string | undefined;
    for (;;) {
      const at = q.position;
      const block = await q.read(TAR_BLOCK);
      if (block.length === 0) throw new FormatError(`${file}: the archive ends without tar's end-of-archive blocks`);
      if (block.length < TAR_BLOCK) throw new FormatError(`${file}: the archive is truncated at byte ${at}`);
      const entry = parseTarHeader(block, at, file);
      if (!entry) {
        const second = await q.read(TAR_BLOCK);
        if (second.length < TAR_BLOCK || second.some((b) => b !== 0)) {
          throw new FormatError(`${file}: incomplete end-of-archive marker at byte ${at}`);
        }
        return undefined;
      }
      if (entry.type === 'L' || entry.type === 'x') {
        // GNU long name, or a POSIX pax header that may carry the next entry's path
        if (entry.size > 64 * 1024) throw new FormatError(`${file}: tar extended header at byte ${at} is too large`);
        const text = new TextDecoder().decode(await body(entry.size, `tar extended header at byte ${at}`));
        if (entry.type === 'L') longName = text.replace(/\0+$/, '');
        else {
          const path = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(text);
          if (path) longName = path[1];
        }
        continue;
      }
      if (entry.type !== '0' && entry.type !== '\0' && entry.type !== '7') {
        // directories, global pax headers and the like: skip their bodies, bounded
        if (entry.size > maxXml) {
          throw new FormatError(
            `${file}: tar entry '${printable(entry.name)}' of type '${printable(entry.type)}' is too large`,
          );
        }
        await body(entry.size, `tar entry '${printable(entry.name)}'`);
        continue;
      }
      return longName === undefined ? entry : { ...entry, name: longName };
    }
  };
  try {
    const first = await next();
    if (!first) throw new FormatError(`${file}: the archive holds no ova.xml`);
    if (first.name !== 'ova.xml') {
      throw new FormatError(`${file}: the first entry is '${printable(first.name)}', expected ova.xml`);
    }
    if (first.size > maxXml) throw new FormatError(`${file}: ova.xml is ${first.size} bytes (limit ${maxXml})`);
    const contents = parseOvaXml(new TextDecoder().decode(await body(first.size, 'ova.xml')), file);
    return { q, next, body, contents, compression };
  } catch (error) {
    await q.close();
    throw error;
  }
}

/** What {@link readXvaHeader} found. */
export interface XvaHeader {
  /** The VM record, as decoded. */
  vm: Record<string, XapiValue>;
  /** The VDIs whose data the archive carries. */
  vdis: XvaVdi[];
  /** How the archive is compressed. */
  compression: XvaCompression;
}

/** Reads only an XVA's `ova.xml` (the VM and its disks), then stops reading the stream. */
export async function readXvaHeader(
  source: AsyncIterable<Uint8Array>,
  options: ReadXvaHeaderOptions = {},
): Promise<XvaHeader> {
  const archive = await openArchive(source, options.name ?? 'xva', options.maxOvaXml ?? 16 * 1024 * 1024);
  await archive.q.close();
  return { ...archive.contents, compression: archive.compression };
}

/**
 * Reads an XVA stream (plain, gzip- or zstd-compressed tar): `ova.xml`, then every chunk file,
 * each verified against the `.xxhash` (XXH64) or `.checksum` (SHA-1) file after it before it is
 * written to its VDI's writer. Chunks are placed as XAPI's importer places them (see
 * {@link ChunkPlacer}); skipped chunks are zeros. A damaged chunk, a chunk outside its VDI, a VDI
 * left incomplete, a truncated archive or a malformed record is a {@link FormatError} naming the
 * chunk or record. Memory stays at about one chunk.
 */
export async function readXva(source: AsyncIterable<Uint8Array>, options: ReadXvaOptions): Promise<XvaContents> {
  const file = options.name ?? 'xva';
  throwIfAborted(options.signal);
  const archive = await openArchive(source, file, options.maxOvaXml ?? 16 * 1024 * 1024);
  const { contents, next, body, q } = archive;
  const writers = new Map<string, { writer: DiskWriter | undefined }>();
  const target = async (vdi: XvaVdi) => {
    let t = writers.get(vdi.ref);
    if (!t) {
      t = { writer: await options.openWriter(vdi) };
      writers.set(vdi.ref, t);
    }
    return t.writer;
  };
  const placer = new ChunkPlacer(contents.vdis, file);
  let chunks = 0;
  try {
    for (;;) {
      throwIfAborted(options.signal);
      const entry = await next();
      if (!entry) break;
      const chunk = CHUNK_NAME.exec(entry.name);
      if (!chunk || !contents.vdis.some((v) => v.ref === chunk[1])) {
        if (entry.name.endsWith('.xxhash') || entry.name.endsWith('.checksum')) {
          throw new FormatError(`${file}: checksum file ${printable(entry.name)} follows no chunk`);
        }
        // an unknown regular file: skip it, bounded
        if (entry.size > (options.maxOvaXml ?? 16 * 1024 * 1024)) {
          throw new FormatError(`${file}: unexpected entry '${printable(entry.name)}' of ${entry.size} bytes`);
        }
        await body(entry.size, `entry '${printable(entry.name)}'`);
        continue;
      }
      if (entry.size > XVA_CHUNK) {
        throw new FormatError(`${file}: chunk ${entry.name} is ${entry.size} bytes, more than 1 MiB`);
      }
      const place = placer.place(chunk[1]!, Number(chunk[2]), entry.size, entry.name);
      const data = await body(entry.size, `chunk ${entry.name}`);
      const sumEntry = await next();
      const kind = sumEntry ? checksumKind(sumEntry.name, entry.name) : undefined;
      if (!sumEntry || !kind) {
        throw new FormatError(
          `${file}: chunk ${entry.name} has no .xxhash or .checksum file after it (found ${sumEntry ? `'${printable(sumEntry.name)}'` : 'the end of the archive'})`,
        );
      }
      if (sumEntry.size > 256)
        throw new FormatError(`${file}: checksum file ${sumEntry.name} is ${sumEntry.size} bytes`);
      await verifyChunk(file, entry.name, kind, await body(sumEntry.size, sumEntry.name), data);
      const writer = await target(place.vdi);
      if (writer && data.length > 0 && !isZero(data)) await writer.write(place.offset, data);
      chunks++;
    }
    placer.finish();
    // every VDI gets a writer, so the caller gets a disk even for an empty one
    for (const vdi of contents.vdis) await target(vdi);
    for (const { writer } of writers.values()) await writer?.flush();
    return { vm: contents.vm, vdis: contents.vdis, chunks, compression: archive.compression };
  } finally {
    for (const { writer } of writers.values()) await writer?.close().catch(() => undefined);
    await q.close();
  }
}
