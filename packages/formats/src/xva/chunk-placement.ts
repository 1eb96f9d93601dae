import { FormatError } from '@replikit/core';

/** A VDI whose chunks an XVA streams: its folder in the archive and its size. */
export interface PlacedVdi {
  /** The VDI's reference, which names its folder in the archive (`Ref:10`). */
  ref: string;
  /** The VDI's virtual size in bytes. */
  size: number;
}

/** Where a chunk's bytes go. */
export interface ChunkPlace<V extends PlacedVdi> {
  vdi: V;
  /** Byte offset in the VDI. */
  offset: number;
}

/**
 * Places XVA chunks the way XAPI's importer does (xapi-project/xen-api ocaml/xapi/stream_vdi.ml
 * `recv_all_vdi`): the VDIs are filled one after the other, sorted by their reference; each VDI
 * takes chunks in archive order until exactly its virtual size is written; chunk numbers must
 * increase; a gap of k numbers before a chunk counts as k zero chunks of the length of the
 * archive's first chunk; an empty chunk (the exporter's keep-alive) advances the number, not the
 * offset. So chunk N is not always at N MiB. Whatever XAPI would write outside a VDI, or a VDI
 * left incomplete, is a {@link FormatError} naming the chunk.
 */
export class ChunkPlacer<V extends PlacedVdi> {
  private readonly queue: V[];
  private index = 0;
  private offset = 0;
  private last = -1;
  private lastName = '';
  private firstLength = -1;

  /** @param vdis - the VDIs that carry data (XAPI leaves CD drives out), in any order */
  constructor(
    vdis: readonly V[],
    private readonly file: string,
  ) {
    this.queue = [...vdis].sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
    this.skipFull();
  }

  private skipFull(): void {
    while (this.index < this.queue.length && this.offset >= this.queue[this.index]!.size) {
      this.index++;
      this.offset = 0;
      this.last = -1;
      this.lastName = '';
    }
  }

  /** Where chunk `number` of VDI `ref`, `length` bytes long and named `name`, goes. */
  place(ref: string, number: number, length: number, name: string): ChunkPlace<V> {
    const current = this.queue[this.index];
    if (!current || current.ref !== ref) {
      const done = this.queue.findIndex((v) => v.ref === ref);
      if (done !== -1 && done < this.index) {
        throw new FormatError(
          `${this.file}: chunk ${name} lies past the end of VDI ${ref} (${this.queue[done]!.size} bytes), which earlier chunks already filled`,
        );
      }
      if (!current) throw new FormatError(`${this.file}: chunk ${name} belongs to no VDI that ova.xml streams`);
      throw new FormatError(
        `${this.file}: chunk ${name} comes while VDI ${current.ref} holds ${this.offset} of its ${current.size} bytes` +
          `${this.lastName ? ` after chunk ${this.lastName}` : ''}: its remaining chunks are missing`,
      );
    }
    if (number <= this.last) {
      throw new FormatError(`${this.file}: chunk ${name} comes after chunk ${this.lastName}: numbers must increase`);
    }
    if (this.firstLength < 0) this.firstLength = length;
    const start = this.offset + (number - this.last - 1) * this.firstLength;
    if (start + length > current.size) {
      throw new FormatError(
        `${this.file}: chunk ${name} (${length} bytes) lies past the end of VDI ${ref}: it would end at byte ${start + length} of ${current.size}`,
      );
    }
    this.offset = start + length;
    this.last = number;
    this.lastName = name;
    const place = { vdi: current, offset: start };
    this.skipFull();
    return place;
  }

  /** Throws unless every VDI has been filled to its size. */
  finish(): void {
    const current = this.queue[this.index];
    if (!current) return;
    if (this.last < 0) {
      throw new FormatError(
        `${this.file}: VDI ${current.ref} (${current.size} bytes) has no chunk: its first chunk ${current.ref}/00000000 is missing`,
      );
    }
    throw new FormatError(
      `${this.file}: VDI ${current.ref} ends at byte ${this.offset} of ${current.size} after chunk ${this.lastName}: its last chunk is missing`,
    );
  }
}
