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

  /** Marks every slot free (for an arena whose previous user is gone). */
  reset(): this {
    this.busy.fill(0);
    this.free = this.busy.length;
    this.next = 0;
    return this;
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

/** What can allocate an arena's memory: a hasher with shared buffers it reads in place. */
export interface ArenaMemorySource {
  /** Allocates `bytes` bytes (see `BlockHasher.allocate`). */
  allocate?(bytes: number): Uint8Array;
}

/**
 * Arenas kept from one connection to the next (an agent serves many sessions): a new arena's
 * pages are mapped and zeroed by the kernel as they are first touched, thousands of page faults
 * per session for 16 MiB. An arena is given back only once its connection is closed, so no
 * late frame of that connection can land in it.
 */
export class ArenaPool {
  private readonly spare: BlockArena[] = [];
  /** Where each arena's memory came from (`undefined`: plain memory). */
  private readonly sources = new WeakMap<BlockArena, ArenaMemorySource | undefined>();

  /** @param keep - Spare arenas kept at most. */
  constructor(private readonly keep = 2) {}

  /**
   * An arena of `slots` slots of `slotBytes` bytes, reused when one is spare. With a `source`
   * that can allocate (a hasher whose threads read its buffers in place), the memory is the
   * source's, and only an arena made by the same source is reused.
   */
  take(slotBytes: number, slots: number, source?: ArenaMemorySource): BlockArena {
    const from = source?.allocate ? source : undefined;
    const at = this.spare.findIndex(
      (a) => a.slotBytes === slotBytes && a.slots === slots && this.sources.get(a) === from,
    );
    if (at >= 0) return this.spare.splice(at, 1)[0]!.reset();
    const bytes = slotBytes * slots;
    const arena = new BlockArena(from ? from.allocate!(bytes) : new Uint8Array(bytes), slotBytes);
    this.sources.set(arena, from);
    return arena;
  }

  /** Keeps `arena` for a later connection (or lets it go when enough are kept). */
  give(arena: BlockArena): void {
    if (this.spare.length < this.keep && !this.spare.includes(arena)) this.spare.push(arena);
  }
}
