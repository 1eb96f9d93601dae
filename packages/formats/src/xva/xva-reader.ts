import { createHash } from 'node:crypto';
import { type DiskWriter, FormatError, throwIfAborted } from '@replikit/core';
import { printable } from '../cursor.js';
import { decodeXapi, type XapiValue } from './ova-xml.js';
import { parseTarHeader, TAR_BLOCK } from './tar.js';
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
  /** Chunk files read and verified. */
  chunks: number;
}

/** Options of {@link readXva}. */
export interface ReadXvaOptions {
  /** Opens the writer a VDI's content goes to (a fresh, zeroed disk of `vdi.size` bytes). It is closed by readXva. */
  openWriter(vdi: XvaVdi): Promise<DiskWriter>;
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

const CHUNK_NAME = /^(Ref:[^/]+)\/(\d{8})$/;

function asString(v: XapiValue | undefined): string {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '';
}

/** Finds the VM and VDI records of a decoded `ova.xml`. */
export function parseOvaXml(xml: string, file: string): { vm: Record<string, XapiValue>; vdis: XvaVdi[] } {
  const doc = decodeXapi(xml, file);
  const objects = !Array.isArray(doc) && typeof doc === 'object' ? doc.objects : undefined;
  if (!Array.isArray(objects)) throw new FormatError(`${file}: ova.xml has no 'objects' list`);
  let vm: Record<string, XapiValue> | undefined;
  const vdis: XvaVdi[] = [];
  for (const o of objects) {
    if (typeof o !== 'object' || Array.isArray(o)) continue;
    const snapshot = o.snapshot;
    if (typeof snapshot !== 'object' || Array.isArray(snapshot)) continue;
    if (o.class === 'VM' && !vm) vm = snapshot;
    if (o.class === 'VDI') {
      const sizeText = asString(snapshot.virtual_size);
      const size = Number(sizeText);
      if (!/^\d+$/.test(sizeText) || !Number.isSafeInteger(size)) {
        throw new FormatError(`${file}: ova.xml VDI ${asString(o.id)} has virtual_size '${printable(sizeText)}'`);
      }
      vdis.push({ ref: asString(o.id), uuid: asString(snapshot.uuid), name: asString(snapshot.name_label), size });
    }
  }
  if (!vm) throw new FormatError(`${file}: ova.xml has no VM object`);
  return { vm, vdis };
}

/**
 * Reads an XVA stream: `ova.xml`, then every chunk file, each verified against its `.checksum`
 * (SHA-1) before it is written to its VDI's writer. Omitted chunks are zeroes. A damaged chunk,
 * a truncated archive or a malformed record is a {@link FormatError} naming the chunk or record.
 * Memory stays at about one chunk.
 */
export async function readXva(source: AsyncIterable<Uint8Array>, options: ReadXvaOptions): Promise<XvaContents> {
  const file = options.name ?? 'xva';
  const maxXml = options.maxOvaXml ?? 16 * 1024 * 1024;
  const q = new ByteQueue(source);
  const writers = new Map<string, { vdi: XvaVdi; writer: DiskWriter; last: number }>();
  let chunks = 0;
  let contents: { vm: Record<string, XapiValue>; vdis: XvaVdi[] } | undefined;
  let pending: { name: string; ref: string; index: number; data: Uint8Array } | undefined;
  const body = async (size: number, what: string): Promise<Uint8Array> => {
    const data = await q.read(size);
    if (data.length < size) throw new FormatError(`${file}: ${what} is cut short: the archive is truncated`);
    const pad = (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
    if ((await q.read(pad)).length < pad)
      throw new FormatError(`${file}: ${what} is cut short: the archive is truncated`);
    return data;
  };
  try {
    for (;;) {
      throwIfAborted(options.signal);
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
        break;
      }
      if (pending && entry.name !== `${pending.name}.checksum`) {
        throw new FormatError(
          `${file}: chunk ${pending.name} has no checksum file after it (found '${printable(entry.name)}')`,
        );
      }
      if (entry.type !== '0' && entry.type !== '\0') {
        // pax headers, directories and the like: skip their bodies, bounded
        if (entry.size > maxXml)
          throw new FormatError(
            `${file}: tar entry '${printable(entry.name)}' of type '${printable(entry.type)}' is too large`,
          );
        await body(entry.size, `tar entry '${printable(entry.name)}'`);
        continue;
      }
      if (!contents) {
        if (entry.name !== 'ova.xml') {
          throw new FormatError(`${file}: the first entry is '${printable(entry.name)}', expected ova.xml`);
        }
        if (entry.size > maxXml) throw new FormatError(`${file}: ova.xml is ${entry.size} bytes (limit ${maxXml})`);
        contents = parseOvaXml(new TextDecoder().decode(await body(entry.size, 'ova.xml')), file);
        continue;
      }
      const chunk = CHUNK_NAME.exec(entry.name);
      if (chunk) {
        const ref = chunk[1]!;
        const index = Number(chunk[2]);
        const vdi = contents.vdis.find((v) => v.ref === ref);
        if (!vdi) throw new FormatError(`${file}: chunk ${entry.name} belongs to no VDI of ova.xml`);
        if (entry.size > XVA_CHUNK || index * XVA_CHUNK + entry.size > vdi.size) {
          throw new FormatError(
            `${file}: chunk ${entry.name} (${entry.size} bytes) lies outside its VDI of ${vdi.size} bytes`,
          );
        }
        pending = { name: entry.name, ref, index, data: await body(entry.size, `chunk ${entry.name}`) };
        continue;
      }
      if (pending && entry.name === `${pending.name}.checksum`) {
        if (entry.size > 256) throw new FormatError(`${file}: checksum file ${entry.name} is ${entry.size} bytes`);
        const expected = new TextDecoder()
          .decode(await body(entry.size, entry.name))
          .trim()
          .toLowerCase();
        const computed = createHash('sha1').update(pending.data).digest('hex');
        if (expected !== computed) {
          throw new FormatError(
            `${file}: chunk ${pending.name} is damaged: its SHA-1 is ${computed}, the archive says ${printable(expected)}`,
            { details: { file, chunk: pending.name, expected, computed } },
          );
        }
        let target = writers.get(pending.ref);
        if (!target) {
          const vdi = contents.vdis.find((v) => v.ref === pending!.ref)!;
          target = { vdi, writer: await options.openWriter(vdi), last: -1 };
          writers.set(pending.ref, target);
        }
        if (pending.index <= target.last) {
          throw new FormatError(`${file}: chunk ${pending.name} comes after chunk ${target.last} of the same VDI`);
        }
        target.last = pending.index;
        await target.writer.write(pending.index * XVA_CHUNK, pending.data);
        chunks++;
        pending = undefined;
        continue;
      }
      if (entry.name.endsWith('.xxhash')) {
        throw new FormatError(
          `${file}: ${entry.name}: xxhash chunk checksums are not supported (only SHA-1 .checksum files)`,
        );
      }
      // unknown regular file: skip it, bounded
      if (entry.size > maxXml)
        throw new FormatError(`${file}: unexpected entry '${printable(entry.name)}' of ${entry.size} bytes`);
      await body(entry.size, `entry '${printable(entry.name)}'`);
    }
    if (!contents) throw new FormatError(`${file}: the archive holds no ova.xml`);
    if (pending) throw new FormatError(`${file}: chunk ${pending.name} has no checksum file`);
    // VDIs without any chunk are all zeroes: still give them a writer so the caller gets a disk
    for (const vdi of contents.vdis) {
      if (!writers.has(vdi.ref)) writers.set(vdi.ref, { vdi, writer: await options.openWriter(vdi), last: -1 });
    }
    for (const { writer } of writers.values()) await writer.flush();
    return { ...contents, chunks };
  } finally {
    for (const { writer } of writers.values()) await writer.close().catch(() => undefined);
    await q.close();
  }
}
