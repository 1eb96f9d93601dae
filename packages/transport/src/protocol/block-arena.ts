/**
 * Fixed slots of one buffer into which the frame decoder reads block data, so that receiving a
 * block allocates nothing. The slots are handed out in ring order: blocks that arrive one after
 * another lie one after another in memory, and the agent's writer merges them into one write
 * (see `coalesceWrites`). When every slot is taken, {@link BlockArena.take} returns `undefined`
 * and the caller allocates (memory stays bounded by the connection's own limits; the arena only
 * saves work).
 */
export class BlockArena {
  /** Bytes of one slot: the largest block data the arena holds. */
  readonly slotBytes: number;
  private readonly busy: Uint8Array;
  private next = 0;
  private free: number;

  /**
   * @param memory - The arena's bytes; its length is rounded down to whole slots.
   * @param slotBytes - Bytes of one slot (the session's block size).
   */
  constructor(
    readonly memory: Uint8Array,
    slotBytes: number,
  ) {
    if (!Number.isSafeInteger(slotBytes) || slotBytes < 1) throw new RangeError(`slot of ${slotBytes} bytes`);
    this.slotBytes = slotBytes;
    this.busy = new Uint8Array(Math.floor(memory.length / slotBytes));
    this.free = this.busy.length;
  }

  /** Number of slots. */
  get slots(): number {
    return this.busy.length;
  }

  /** A slot's first `length` bytes, or `undefined` when none is free or `length` does not fit. */
  take(length: number): Uint8Array | undefined {
    if (length > this.slotBytes || this.free === 0) return undefined;
    const count = this.busy.length;
    let slot = this.next;
    while (this.busy[slot] !== 0) slot = slot + 1 === count ? 0 : slot + 1;
    this.busy[slot] = 1;
    this.free--;
    this.next = slot + 1 === count ? 0 : slot + 1;
    return this.memory.subarray(slot * this.slotBytes, slot * this.slotBytes + length);
  }

  /** True when `view` is (part of) a slot of this arena. */
  owns(view: Uint8Array): boolean {
    return (
      view.buffer === this.memory.buffer &&
      view.byteOffset >= this.memory.byteOffset &&
      view.byteOffset < this.memory.byteOffset + this.busy.length * this.slotBytes
    );
  }

  /** Gives back the slot `view` lies in; views of other memory are ignored. */
  release(view: Uint8Array): void {
    if (!this.owns(view)) return;
    const slot = Math.floor((view.byteOffset - this.memory.byteOffset) / this.slotBytes);
    if (this.busy[slot] === 0) return;
    this.busy[slot] = 0;
    this.free++;
  }
}
