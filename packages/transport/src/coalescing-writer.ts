import type { DiskWriter, Hypervisor, OperationOptions } from '@replikit/core';

/** Bytes of one merged write, at most. */
const MAX_RUN_BYTES = 4 * 1024 * 1024;

interface Run {
  offset: number;
  /** The first block's view; the run extends it in the same memory. */
  first: Uint8Array;
  length: number;
  waiters: Array<{ resolve(): void; reject(error: unknown): void }>;
}

/**
 * Wraps a {@link @replikit/core!DiskWriter} so that writes adjacent on the disk and in memory
 * (blocks the frame decoder read into consecutive arena slots) reach the storage as one write of
 * up to `maxRunBytes`, and at most `maxInFlight` writes run at once: while they run, the next
 * adjacent writes keep merging into a larger one (writes to one file serialize on its inode lock
 * anyway, and threads that wait for it spin on this 2-core machine's cores). Each caller's
 * promise settles when the write that carries its bytes does, so nothing is reported written
 * before it is. `flush` and `close` first wait for every write started before them.
 */
export function coalesceWrites(writer: DiskWriter, maxRunBytes = MAX_RUN_BYTES, maxInFlight = 1): DiskWriter {
  /** The run still growing. */
  let run: Run | undefined;
  /** Runs that stopped growing and wait for their turn. */
  const queue: Run[] = [];
  let scheduled = false;
  const running = new Set<Promise<void>>();

  const close = (): void => {
    if (!run) return;
    queue.push(run);
    run = undefined;
  };

  const start = (): void => {
    // A run that could still grow starts only when nothing else is waiting for a turn.
    if (queue.length === 0 && running.size < maxInFlight) close();
    while (running.size < maxInFlight && queue.length > 0) {
      const current = queue.shift()!;
      const data = new Uint8Array(current.first.buffer, current.first.byteOffset, current.length);
      const write = writer.write(current.offset, data).then(
        () => {
          for (const waiter of current.waiters) waiter.resolve();
        },
        (error: unknown) => {
          for (const waiter of current.waiters) waiter.reject(error);
        },
      );
      running.add(write);
      void write.finally(() => {
        running.delete(write);
        start();
      });
    }
  };

  /** Starts everything queued or growing and waits until all of it is written. */
  const settle = async (): Promise<void> => {
    close();
    start();
    while (running.size > 0 || queue.length > 0) {
      await Promise.all([...running]);
      close();
      start();
    }
  };

  return {
    size: writer.size,
    write(offset: number, data: Uint8Array, options?: OperationOptions): Promise<void> {
      if (options?.signal) {
        // A cancellable write goes alone, so that its signal is honoured.
        close();
        start();
        return writer.write(offset, data, options);
      }
      const extends_ =
        run !== undefined &&
        run.offset + run.length === offset &&
        run.first.buffer === data.buffer &&
        run.first.byteOffset + run.length === data.byteOffset &&
        run.length + data.length <= maxRunBytes;
      if (!extends_) {
        close();
        run = { offset, first: data, length: 0, waiters: [] };
      }
      const current = run!;
      current.length += data.length;
      const done = new Promise<void>((resolve, reject) => current.waiters.push({ resolve, reject }));
      if (!scheduled) {
        scheduled = true;
        setImmediate(() => {
          scheduled = false;
          start();
        });
      }
      return done;
    },
    async writeZeroes(offset: number, length: number, options?: OperationOptions): Promise<void> {
      close();
      start();
      await writer.writeZeroes(offset, length, options);
    },
    async flush(options?: OperationOptions): Promise<void> {
      await settle();
      await writer.flush(options);
    },
    async close(): Promise<void> {
      await settle().catch(() => undefined);
      await writer.close();
    },
  };
}

/**
 * A view of `hypervisor` whose replica writers merge adjacent writes ({@link coalesceWrites});
 * every other member is the hypervisor's own.
 */
export function coalescingHypervisor(hypervisor: Hypervisor): Hypervisor {
  return new Proxy(hypervisor, {
    get(target, property) {
      if (property === 'openWriter') {
        return async (...args: Parameters<Hypervisor['openWriter']>) =>
          coalesceWrites(await target.openWriter(...args));
      }
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
