import { AbstractDiskReader, type Extent, type OperationOptions } from '@replikit/core';
import type { ImageReader } from '@replikit/formats';

/**
 * A disk of a checkpoint (or of the live VM) read through its VHDX chain: the driver kit's reader
 * (closed state, range and signal checks, error wrapping) over a `@replikit/formats` image reader,
 * which it closes with itself. `size` may be less than the image's (a replica disk whose VHDX is
 * rounded up to whole sectors): reads stop there.
 */
export class ChainReader extends AbstractDiskReader {
  constructor(
    private readonly image: ImageReader,
    what: string,
    size = image.size,
  ) {
    super({ size, blockSize: image.blockSize, what });
  }

  protected override async _readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    await this.image.readInto(offset, target, options);
  }

  protected override async *_allocated(options?: OperationOptions): AsyncIterable<Extent> {
    yield* this.image.allocated(options);
  }

  protected override async _close(): Promise<void> {
    await this.image.close();
  }
}
