/** One queued write of a {@link WriteLane}. */
export interface LaneEntry {
  /** Position in the lane (writes below a position are what {@link WriteLane.settled} waits for). */
  readonly seq: number;
  /** Bytes the write holds until it completes. */
  readonly bytes: number;
  /** Starts the write. */
  readonly write: () => Promise<void>;
  /** True once the operation may be written (its digest checked out). */
  ready: boolean;
  /** True once the write completed. */
  done: boolean;
}

interface Waiter {
  /** Resolves once every write below `seq` completed. */
  seq: number;
  resolve(): void;
  reject(error: unknown): void;
}

/**
 * The writes of one replica disk on the target side. Operations are queued in the order
 * received and started strictly in that order, each once it is marked ready (its digest checked
 * out); up to `depth` of them run at once, so the storage sees a queue instead of one write per
 * round trip. Nothing is started after a failure. {@link WriteLane.settled} waits for every
 * operation queued before it, which is what an ack needs.
 *
 * The lane is a pair of arrays and counters, not a chain of promises: queuing a block and
 * marking it ready allocate nothing but its entry, which matters at thousands of blocks a second.
 */
export class WriteLane {
  /** Entries not yet started, in order, from `waitHead` on. */
  private waiting: Array<LaneEntry | undefined> = [];
  private waitHead = 0;
  /** Entries started, in order, from `runHead` on (completed ones are skipped at the head). */
  private started: Array<LaneEntry | undefined> = [];
  private runHead = 0;
  private running = 0;
  private nextSeq = 0;
  private failure: { error: unknown } | undefined;
  private settleWaiters: Waiter[] = [];
  private roomWaiters: Array<{ resolve(): void; reject(error: unknown): void }> = [];
  private idleWaiters: Array<() => void> = [];
  /** Bytes queued and not yet written. */
  queued = 0;
  /** Called once, with the lane's first failure (a write that failed, or {@link WriteLane.fail}). */
  onFail: ((error: unknown) => void) | undefined;

  /**
   * @param depth - Writes running at once.
   * @param maxQueued - Bytes queued before {@link WriteLane.full} says the reader should wait.
   */
  constructor(
    private readonly depth: number,
    private readonly maxQueued: number,
  ) {}

  /**
   * Queues an operation of `bytes` bytes whose write `write` starts. A `ready` operation may be
   * started as soon as those before it were; otherwise it waits for {@link WriteLane.ready}.
   * Throws the lane's failure, if any.
   */
  add(bytes: number, write: () => Promise<void>, ready = true): LaneEntry {
    this.check();
    const entry: LaneEntry = { seq: this.nextSeq++, bytes, write, ready, done: false };
    this.queued += bytes;
    this.waiting.push(entry);
    if (ready) this.pump();
    return entry;
  }

  /** Marks a queued operation as checked: it starts once those before it have. */
  ready(entry: LaneEntry): void {
    entry.ready = true;
    this.pump();
  }

  /** True when more than `maxQueued` bytes wait: the reader should await {@link WriteLane.room}. */
  get full(): boolean {
    return this.queued > this.maxQueued;
  }

  /** Resolves once the queue has room again; rejects with the lane's failure. */
  room(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure.error);
    if (!this.full) return Promise.resolve();
    return new Promise((resolve, reject) => this.roomWaiters.push({ resolve, reject }));
  }

  /** Resolves when every operation queued so far is written; rejects with the lane's failure. */
  async settled(): Promise<void> {
    const seq = this.nextSeq;
    if (!this.failure && this.lowestOpen() < seq) {
      try {
        await new Promise<void>((resolve, reject) => this.settleWaiters.push({ seq, resolve, reject }));
      } catch (error) {
        await this.idle();
        throw error;
      }
    }
    if (this.failure) {
      await this.idle();
      throw this.failure.error;
    }
  }

  /** Waits for what runs, ignoring failures (a connection that ends). */
  idle(): Promise<void> {
    if (this.running === 0 && (this.failure || this.waitHead === this.waiting.length)) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Fails the lane: nothing more starts, and waiters get `error`. */
  fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    const settle = this.settleWaiters;
    const room = this.roomWaiters;
    this.settleWaiters = [];
    this.roomWaiters = [];
    for (const waiter of settle) waiter.reject(error);
    for (const waiter of room) waiter.reject(error);
    this.onFail?.(error);
    this.notifyIdle();
  }

  private check(): void {
    if (this.failure) throw this.failure.error;
  }

  /** The lowest position whose write has not completed. */
  private lowestOpen(): number {
    while (this.runHead < this.started.length && this.started[this.runHead]!.done) {
      this.started[this.runHead++] = undefined;
    }
    if (this.runHead === this.started.length) {
      this.started = [];
      this.runHead = 0;
    } else if (this.runHead > 1024) {
      this.started = this.started.slice(this.runHead);
      this.runHead = 0;
    }
    if (this.runHead < this.started.length) return this.started[this.runHead]!.seq;
    if (this.waitHead < this.waiting.length) return this.waiting[this.waitHead]!.seq;
    return this.nextSeq;
  }

  /** Starts the ready operations at the head of the queue while there is depth. */
  private pump(): void {
    while (!this.failure && this.running < this.depth && this.waitHead < this.waiting.length) {
      const entry = this.waiting[this.waitHead]!;
      if (!entry.ready) break;
      this.waiting[this.waitHead++] = undefined;
      this.running++;
      this.started.push(entry);
      let write: Promise<void>;
      try {
        write = entry.write();
      } catch (error) {
        write = Promise.reject(error);
      }
      write.then(
        () => this.completed(entry),
        (error: unknown) => {
          this.fail(error);
          this.completed(entry);
        },
      );
    }
    if (this.waitHead === this.waiting.length && this.waitHead > 0) {
      this.waiting = [];
      this.waitHead = 0;
    } else if (this.waitHead > 1024) {
      this.waiting = this.waiting.slice(this.waitHead);
      this.waitHead = 0;
    }
  }

  private completed(entry: LaneEntry): void {
    entry.done = true;
    this.running--;
    this.queued -= entry.bytes;
    if (!this.failure) {
      const lowest = this.lowestOpen();
      if (this.settleWaiters.length > 0) {
        if (this.settleWaiters[0]!.seq <= lowest) {
          const due = this.settleWaiters.filter((w) => w.seq <= lowest);
          this.settleWaiters = this.settleWaiters.filter((w) => w.seq > lowest);
          for (const waiter of due) waiter.resolve();
        }
      }
      if (this.roomWaiters.length > 0 && !this.full) {
        const room = this.roomWaiters;
        this.roomWaiters = [];
        for (const waiter of room) waiter.resolve();
      }
      this.pump();
    }
    this.notifyIdle();
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0 || this.running > 0) return;
    if (!this.failure && this.waitHead < this.waiting.length) return;
    const idle = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of idle) wake();
  }
}
