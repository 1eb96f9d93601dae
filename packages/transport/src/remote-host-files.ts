import { AbstractDiskReader, type Extent, type OperationOptions } from '@replikit/core';
import type { ImageInfo, ImageReader } from '@replikit/formats';
import type { HostImageFacts } from './host-file-ops.js';
import type { HostFileStat } from './host-files.js';
import { RemoteHostFile } from './remote-host-file.js';
import { MAX_READ_BYTES } from './source-read-ops.js';

/** Sends one host-file request to the agent and returns its checked result. */
export type HostFileCall = (op: string, args: Record<string, unknown>, options?: OperationOptions) => Promise<unknown>;

/**
 * An image on the agent's host, read through it: each read is one or more `hostImageRead`
 * requests of at most 4 MiB; its extents come from `hostImageExtents`, page by page. The agent
 * opened the whole differencing chain; this side sees one disk (`parent` is undefined).
 */
export class RemoteHostImage extends AbstractDiskReader implements ImageReader {
  /** The image's facts as the agent told them (`fileSize` is unknown here: 0). */
  readonly info: ImageInfo;
  /** Always undefined: the chain is resolved on the agent. */
  readonly parent: ImageReader | undefined = undefined;

  constructor(
    private readonly path: string,
    facts: HostImageFacts,
    private readonly ask: HostFileCall,
  ) {
    super({ size: facts.size, blockSize: facts.blockSize, what: `${path} on the agent` });
    this.info = {
      format: facts.format,
      subformat: facts.subformat,
      path,
      size: facts.size,
      blockSize: facts.blockSize,
      logicalSectorSize: facts.logicalSectorSize,
      fileSize: 0,
      extra: {},
    };
  }

  protected override async _readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    for (let done = 0; done < target.length; ) {
      const length = Math.min(MAX_READ_BYTES, target.length - done);
      const bytes = (await this.ask(
        'hostImageRead',
        { path: this.path, offset: offset + done, length },
        options,
      )) as Uint8Array;
      if (bytes.length !== length)
        throw new RangeError(`the agent answered ${bytes.length} bytes for a read of ${length}`);
      target.set(bytes, done);
      done += length;
    }
  }

  protected override async *_allocated(options?: OperationOptions): AsyncIterable<Extent> {
    let from: number | null = 0;
    let last = 0;
    while (from !== null) {
      const page = (await this.ask('hostImageExtents', { path: this.path, from }, options)) as {
        extents: Extent[];
        next: number | null;
      };
      for (const e of page.extents) {
        // The agent's claims are checked: ascending, inside the disk.
        if (e.offset < last || e.offset + e.length > this.size) {
          throw new RangeError(
            `the agent listed extent ${e.offset} (+${e.length}) out of order or outside ${this.path}`,
          );
        }
        last = e.offset + e.length;
        yield e;
      }
      if (page.next !== null && page.next < last) throw new RangeError('the agent listed extents that go backwards');
      from = page.next;
    }
  }
}

/**
 * The files of a Hyper-V host as a `replikit-agent --host-files` serves them: the driver's data
 * side when it controls the host through PowerShell remoting. Paths are the host's own (as
 * `Get-VHD` names them); the agent refuses those outside its root.
 */
export class RemoteHostFiles {
  constructor(
    private readonly peer: string,
    private readonly call: HostFileCall,
  ) {}

  /** Opens an image (with its differencing parents, on the agent). */
  async openImage(path: string, options?: OperationOptions): Promise<ImageReader> {
    const facts = (await this.call('hostImage', { path }, options)) as HostImageFacts;
    return new RemoteHostImage(path, facts, this.call);
  }

  /** A small state file's text, or undefined when it does not exist. */
  async readText(path: string, options?: OperationOptions): Promise<string | undefined> {
    return (await this.call('hostTextRead', { path }, options)) as string | undefined;
  }

  /** Writes a small state file atomically. */
  async writeText(path: string, text: string, options?: OperationOptions): Promise<void> {
    await this.call('hostTextWrite', { path, text }, options);
  }

  /** The kind, size and change stamp of `path`, or undefined when it does not exist. */
  async stat(path: string, options?: OperationOptions): Promise<HostFileStat | undefined> {
    return (await this.call('hostFileStat', { path }, options)) as HostFileStat | undefined;
  }

  /** The names in folder `path` (none when it does not exist). */
  async list(path: string, options?: OperationOptions): Promise<string[]> {
    return (await this.call('hostFileList', { path }, options)) as string[];
  }

  /** Makes folder `path` and its missing parents. */
  async makeFolder(path: string, options?: OperationOptions): Promise<void> {
    await this.call('hostFolderMake', { path }, options);
  }

  /** Creates file `path` empty, or `exclusive` (`E_CONFLICT` when it exists) holding `text`. */
  async createFile(path: string, exclusive = false, text = '', options?: OperationOptions): Promise<void> {
    await this.call('hostFileCreate', { path, exclusive, ...(text !== '' ? { text } : {}) }, options);
  }

  /** Renames `from` over `to` (atomic on the host). */
  async rename(from: string, to: string, options?: OperationOptions): Promise<void> {
    await this.call('hostFileRename', { from, to }, options);
  }

  /** Removes file `path`, or folder `path` with what it holds (`recursive`); nothing when absent. */
  async remove(path: string, recursive = false, options?: OperationOptions): Promise<void> {
    await this.call('hostFileRemove', { path, recursive }, options);
  }

  /** File `path` for writes and reads by offset (see {@link RemoteHostFile}). */
  file(path: string): RemoteHostFile {
    return new RemoteHostFile(path, this.call);
  }

  /** The agent these files are read through. */
  toString(): string {
    return this.peer;
  }
}
