import type { FileHandle } from 'node:fs/promises';
import {
  AbstractDiskReader,
  type DiskReader,
  type Extent,
  type FileSpan,
  FormatError,
  type ReplikitError,
  toStorageError,
} from '@replikit/core';
import { ALLOCATION_GRANULE, type AllocationMap } from './allocation-map.js';
import { readFully } from './block-io.js';
import { openDataFile, READ } from './data-file.js';

/** One open layer of a {@link openChainReader} chain. */
export interface ReaderLayer {
  /** The layer's image. */
  path: string;
  /** Granules a diff layer holds; for the bottom (full) layer, its allocation map or undefined (all allocated). */
  map?: AllocationMap | undefined;
}

/**
 * Opens a reader over a chain of snapshot layers: `layers[0]` is the snapshot read, each later one
 * the snapshot the previous one builds on, the last a full image. A granule is read from the first
 * layer whose map holds it, else from the full image. Runs of neighbouring granules that come from
 * the same layer are read with one call, and the runs of one read are issued together.
 * `allocated()` is the union of the layers' maps (the whole disk when the full image has no map).
 */
export async function openChainReader(layers: ReaderLayer[], size: number, what: string): Promise<DiskReader> {
  const handles: FileHandle[] = [];
  try {
    for (const layer of layers) handles.push(await openDataFile(layer.path, READ, { what }));
  } catch (error) {
    for (const fh of handles) await fh.close().catch(() => undefined);
    throw toStorageError(error, `opening ${what}`);
  }
  return new ChainReader(layers, handles, size, what);
}

class ChainReader extends AbstractDiskReader {
  constructor(
    private readonly layers: ReaderLayer[],
    private readonly handles: FileHandle[],
    size: number,
    what: string,
  ) {
    super({ size, blockSize: ALLOCATION_GRANULE, what });
  }

  protected override async *_allocated(): AsyncIterable<Extent> {
    const bottom = this.layers.at(-1)!;
    if (!bottom.map) {
      yield* super._allocated();
      return;
    }
    const union = bottom.map.clone();
    for (const layer of this.layers.slice(0, -1)) union.union(layer.map!);
    yield* union.extents();
  }

  protected async _readInto(offset: number, target: Uint8Array): Promise<void> {
    const reads = this.runs(offset, target.length).map((run) =>
      this.readRun(run.layer, target, run.position - offset, run.length, run.position),
    );
    const results = await Promise.allSettled(reads);
    for (const result of results) if (result.status === 'rejected') throw result.reason;
  }

  fileSpans(offset: number, length: number): FileSpan[] {
    this.guard(offset, length);
    return this.runs(offset, length).map((run) => ({
      fd: this.handles[run.layer]!.fd,
      position: run.position,
      length: run.length,
      path: this.layers[run.layer]!.path,
    }));
  }

  /** The runs of neighbouring granules of `[offset, offset + length)` that come from the same layer. */
  private runs(offset: number, length: number): Array<{ layer: number; position: number; length: number }> {
    const end = offset + length;
    const runs: Array<{ layer: number; position: number; length: number }> = [];
    let position = offset;
    while (position < end) {
      const layer = this.owner(Math.floor(position / ALLOCATION_GRANULE));
      let runEnd = Math.min(end, (Math.floor(position / ALLOCATION_GRANULE) + 1) * ALLOCATION_GRANULE);
      while (runEnd < end && this.owner(runEnd / ALLOCATION_GRANULE) === layer) {
        runEnd = Math.min(end, runEnd + ALLOCATION_GRANULE);
      }
      runs.push({ layer, position, length: runEnd - position });
      position = runEnd;
    }
    return runs;
  }

  protected override async _close(): Promise<void> {
    for (const fh of this.handles) await fh.close().catch(() => undefined);
  }

  protected override _wrapError(error: unknown): ReplikitError {
    return toStorageError(error, `reading ${this.what}`);
  }

  /** Index of the layer granule `index` is read from. */
  private owner(index: number): number {
    const last = this.layers.length - 1;
    for (let i = 0; i < last; i++) if (this.layers[i]!.map!.has(index)) return i;
    return last;
  }

  private async readRun(
    layer: number,
    target: Uint8Array,
    at: number,
    length: number,
    position: number,
  ): Promise<void> {
    let got: number;
    try {
      got = await readFully(this.handles[layer]!, target, at, length, position);
    } catch (error) {
      throw toStorageError(error, `reading ${this.what} (${this.layers[layer]!.path})`);
    }
    if (got < length) {
      throw new FormatError(
        `${this.what}: image ${this.layers[layer]!.path} ends at ${position + got} bytes, shorter than the declared ${this.size}; it was truncated while open`,
        { details: { path: this.layers[layer]!.path, size: this.size } },
      );
    }
  }
}
