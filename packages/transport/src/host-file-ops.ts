import { InputError, type OperationOptions } from '@replikit/core';
import type { ImageReader } from '@replikit/formats';
import { type HostFileRoot, type HostFileStat, MAX_HOST_LIST, MAX_HOST_TEXT } from './host-files.js';
import { ProtocolError } from './protocol/protocol-error.js';
import { MAX_READ_BYTES } from './source-read-ops.js';
import { integerOf, objectOf, stringOf } from './target-control-shapes.js';

/** Most extents one `hostImageExtents` answer lists (the next call starts where it stopped). */
export const MAX_EXTENTS_PER_ANSWER = 4096;

/** Most images one connection keeps open (the oldest is closed past it). */
const MAX_OPEN_IMAGES = 64;

/** What `hostImage` tells about an image. */
export interface HostImageFacts {
  size: number;
  blockSize: number;
  format: 'raw' | 'vhd' | 'vhdx';
  subformat: 'raw' | 'fixed' | 'dynamic' | 'differencing';
  logicalSectorSize: number;
}

/** The images one connection opened, by path, kept until it ends (checkpoint files are frozen). */
export class HostFileSession {
  private readonly images = new Map<string, Promise<ImageReader>>();

  constructor(readonly files: HostFileRoot) {}

  /** The image at `path`, opened on first use. */
  image(path: string): Promise<ImageReader> {
    let image = this.images.get(path);
    if (!image) {
      image = this.files.openImage(path);
      image.catch(() => this.images.delete(path));
      this.images.set(path, image);
      if (this.images.size > MAX_OPEN_IMAGES) {
        const [oldest, open] = this.images.entries().next().value!;
        this.images.delete(oldest);
        void open.then((r) => r.close()).catch(() => undefined);
      }
    }
    return image;
  }

  /** Closes every image (the connection ended). */
  async close(): Promise<void> {
    const open = [...this.images.values()];
    this.images.clear();
    await Promise.all(open.map((r) => r.then((image) => image.close()).catch(() => undefined)));
  }
}

interface HostFileOp {
  run(session: HostFileSession, args: Record<string, unknown>, options: OperationOptions): Promise<unknown>;
  result(value: unknown): unknown;
}

const pathOf = (args: Record<string, unknown>) => stringOf(args.path, 'path');

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Most bytes one `hostFileWrite` carries: a request is a control frame of at most 64 KiB of JSON,
 * so a larger write is sent as several.
 */
export const MAX_HOST_WRITE = 32 * 1024;

/** Base64 `data` of at most `max` bytes, decoded. */
function bytesOf(data: unknown, what: string, max = MAX_READ_BYTES): Buffer {
  if (typeof data !== 'string' || data.length > Math.ceil(max / 3) * 4 || !BASE64.test(data)) {
    throw new ProtocolError(`${what} must be base64 of at most ${max} bytes`);
  }
  return Buffer.from(data, 'base64');
}

const base64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');

/** The result of an operation that answers nothing. */
function nothing(op: string) {
  return (value: unknown) => {
    if (value !== null) throw new ProtocolError(`the response of ${op} must be null`);
    return null;
  };
}

/** The largest offset or length a host-file write names: VHDX's 64 TiB and its metadata. */
const MAX_FILE_OFFSET = 2 ** 47;

const DECIMAL = /^\d{1,30}$/;

const FORMATS = new Set(['raw', 'vhd', 'vhdx']);
const SUBFORMATS = new Set(['raw', 'fixed', 'dynamic', 'differencing']);

/**
 * The operations an agent that lists the `host-files` feature answers on a target-control
 * connection: images and small state files under its root (see {@link HostFileRoot}).
 */
export const HOST_FILE_OPS: Readonly<Record<string, HostFileOp>> = {
  hostImage: {
    async run(session, a) {
      const image = await session.image(pathOf(a));
      const facts: HostImageFacts = {
        size: image.size,
        blockSize: image.blockSize,
        format: image.info.format,
        subformat: image.info.subformat,
        logicalSectorSize: image.info.logicalSectorSize,
      };
      return facts;
    },
    result(value): HostImageFacts {
      const body = objectOf(value, 'hostImage result');
      if (!FORMATS.has(body.format as string) || !SUBFORMATS.has(body.subformat as string)) {
        throw new ProtocolError('hostImage result.format or .subformat is not one replikit knows');
      }
      return {
        size: integerOf(body.size, 'hostImage result.size'),
        blockSize: integerOf(body.blockSize, 'hostImage result.blockSize', 512, 2 ** 30),
        format: body.format as HostImageFacts['format'],
        subformat: body.subformat as HostImageFacts['subformat'],
        logicalSectorSize: integerOf(body.logicalSectorSize, 'hostImage result.logicalSectorSize', 512, 4096),
      };
    },
  },
  hostImageRead: {
    async run(session, a, o) {
      const image = await session.image(pathOf(a));
      const offset = integerOf(a.offset, 'offset');
      const length = integerOf(a.length, 'length', 1, MAX_READ_BYTES);
      if (offset + length > image.size) {
        throw new InputError(`range ${offset} (+${length}) lies outside ${a.path} (${image.size} bytes)`);
      }
      const bytes = new Uint8Array(length);
      await image.readInto(offset, bytes, o);
      return { data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') };
    },
    result(value) {
      const data = objectOf(value, 'hostImageRead result').data;
      if (
        typeof data !== 'string' ||
        data.length > Math.ceil(MAX_READ_BYTES / 3) * 4 ||
        !/^[A-Za-z0-9+/]*={0,2}$/.test(data)
      ) {
        throw new ProtocolError('hostImageRead result.data must be base64 of at most 4 MiB');
      }
      return Buffer.from(data, 'base64');
    },
  },
  hostImageExtents: {
    async run(session, a, o) {
      const image = await session.image(pathOf(a));
      const from = integerOf(a.from, 'from');
      const extents: Array<[number, number]> = [];
      let next: number | null = null;
      for await (const e of image.allocated(o)) {
        if (e.offset + e.length <= from) continue;
        if (extents.length === MAX_EXTENTS_PER_ANSWER) {
          next = Math.max(e.offset, from);
          break;
        }
        const start = Math.max(e.offset, from);
        extents.push([start, e.offset + e.length - start]);
      }
      return { extents, next };
    },
    result(value) {
      const body = objectOf(value, 'hostImageExtents result');
      const list = body.extents;
      if (!Array.isArray(list) || list.length > MAX_EXTENTS_PER_ANSWER) {
        throw new ProtocolError('hostImageExtents result.extents must be a list');
      }
      const extents = list.map((e, i) => {
        if (!Array.isArray(e) || e.length !== 2)
          throw new ProtocolError(`hostImageExtents result.extents[${i}] must be a pair`);
        return {
          offset: integerOf(e[0], `hostImageExtents result.extents[${i}][0]`),
          length: integerOf(e[1], `hostImageExtents result.extents[${i}][1]`, 1),
        };
      });
      const next = body.next === null ? null : integerOf(body.next, 'hostImageExtents result.next');
      return { extents, next };
    },
  },
  hostTextRead: {
    async run(session, a) {
      return { text: (await session.files.readText(pathOf(a))) ?? null };
    },
    result(value) {
      const text = objectOf(value, 'hostTextRead result').text;
      if (text !== null && (typeof text !== 'string' || text.length > MAX_HOST_TEXT)) {
        throw new ProtocolError('hostTextRead result.text must be a string of at most 1 MiB, or null');
      }
      return text ?? undefined;
    },
  },
  hostTextWrite: {
    async run(session, a) {
      if (typeof a.text !== 'string') throw new ProtocolError('text must be a string');
      await session.files.writeText(pathOf(a), a.text);
      return null;
    },
    result(value) {
      if (value !== null) throw new ProtocolError('the response of hostTextWrite must be null');
      return null;
    },
  },
  // ── writes (docs/protocol.md, section 14): what the Hyper-V target does to a replica folder ──
  hostFileStat: {
    async run(session, a) {
      return (await session.files.stat(pathOf(a))) ?? null;
    },
    result(value): HostFileStat | undefined {
      if (value === null) return undefined;
      const body = objectOf(value, 'hostFileStat result');
      if (body.kind !== 'file' && body.kind !== 'folder')
        throw new ProtocolError('hostFileStat result.kind is unknown');
      for (const key of ['dev', 'ino', 'mtimeNs'] as const) {
        if (typeof body[key] !== 'string' || !DECIMAL.test(body[key] as string)) {
          throw new ProtocolError(`hostFileStat result.${key} must be a decimal string`);
        }
      }
      return {
        kind: body.kind,
        size: integerOf(body.size, 'hostFileStat result.size'),
        dev: body.dev as string,
        ino: body.ino as string,
        mtimeNs: body.mtimeNs as string,
      };
    },
  },
  hostFileList: {
    async run(session, a) {
      return { names: await session.files.list(pathOf(a)) };
    },
    result(value): string[] {
      const names = objectOf(value, 'hostFileList result').names;
      if (
        !Array.isArray(names) ||
        names.length > MAX_HOST_LIST ||
        names.some((n) => typeof n !== 'string' || n === '' || n.length > 255 || /[\\/\0]/.test(n))
      ) {
        throw new ProtocolError('hostFileList result.names must be a list of file names');
      }
      return names as string[];
    },
  },
  hostFolderMake: {
    async run(session, a) {
      await session.files.makeFolder(pathOf(a));
      return null;
    },
    result: nothing('hostFolderMake'),
  },
  hostFileCreate: {
    async run(session, a) {
      const exclusive = a.exclusive === true;
      const text = a.text === undefined ? '' : a.text;
      if (typeof text !== 'string') throw new ProtocolError('text must be a string');
      await session.files.createFile(pathOf(a), exclusive, text);
      return null;
    },
    result: nothing('hostFileCreate'),
  },
  hostFileWrite: {
    async run(session, a) {
      const offset = integerOf(a.offset, 'offset', 0, MAX_FILE_OFFSET);
      await session.files.writeAt(pathOf(a), offset, bytesOf(a.data, 'data', MAX_HOST_WRITE));
      return null;
    },
    result: nothing('hostFileWrite'),
  },
  hostFileRead: {
    async run(session, a) {
      const offset = integerOf(a.offset, 'offset', 0, MAX_FILE_OFFSET);
      const length = integerOf(a.length, 'length', 1, MAX_READ_BYTES);
      return { data: base64(await session.files.readAt(pathOf(a), offset, length)) };
    },
    result(value) {
      return bytesOf(objectOf(value, 'hostFileRead result').data, 'hostFileRead result.data');
    },
  },
  hostFileTruncate: {
    async run(session, a) {
      await session.files.truncate(pathOf(a), integerOf(a.size, 'size', 0, MAX_FILE_OFFSET));
      return null;
    },
    result: nothing('hostFileTruncate'),
  },
  hostFileSync: {
    async run(session, a) {
      await session.files.sync(pathOf(a));
      return null;
    },
    result: nothing('hostFileSync'),
  },
  hostFileRename: {
    async run(session, a) {
      await session.files.rename(stringOf(a.from, 'from'), stringOf(a.to, 'to'));
      return null;
    },
    result: nothing('hostFileRename'),
  },
  hostFileRemove: {
    async run(session, a) {
      await session.files.remove(pathOf(a), a.recursive === true);
      return null;
    },
    result: nothing('hostFileRemove'),
  },
};
