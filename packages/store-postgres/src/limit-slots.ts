import { ConflictError } from '@replikit/core';
import pg from 'pg';
import { limitSlotKey } from './advisory-keys.js';
import type { LimitWant } from './cluster/run-limits.js';

/** The channel a released slot is announced on, so that waiting runs try again at once. */
const SLOT_CHANNEL = 'replikit_limit_slots';

/** Slots of run limits held by one run, on a connection of their own. */
export interface HeldSlots {
  /** The slots held, as `scope:key#n`. */
  readonly slots: string[];
  /**
   * Aborts when the slots' connection is lost: PostgreSQL ended the session's locks with it, so
   * the run should stop at its next checkpoint.
   */
  readonly lost: AbortSignal;
  /** Releases the slots (never rejects: slots whose connection is gone have ended already). */
  release(): Promise<void>;
}

/** Options of {@link takeLimitSlots}. */
export interface TakeSlotsOptions {
  /** Stops the wait: the function rejects with `E_CONFLICT` and holds nothing. */
  signal: AbortSignal;
  /** How often the slots are tried again while none is announced free, in milliseconds. */
  pollMs: number;
  /** Called once when the first try found a limit full and the run starts waiting. */
  onWait?: (full: LimitWant) => void;
}

/**
 * Takes one slot of every limit in `wants`, waiting until it can hold them all at once. A slot is
 * a session-level advisory lock (one of `limit` per key) on a connection of its own, so that it
 * ends when the holding process dies (its connection closes) and at {@link HeldSlots.release}. A
 * try that finds a limit full gives back what it took (so two runs never hold half of each
 * other's slots) and waits for a `NOTIFY` of a release or `pollMs` (with jitter), whichever comes
 * first. Rejects with `E_CONFLICT` when `signal` aborts first (the worker drains).
 */
export async function takeLimitSlots(
  connection: pg.ClientConfig,
  wants: readonly LimitWant[],
  options: TakeSlotsOptions,
): Promise<HeldSlots> {
  const client = new pg.Client(connection);
  const lost = new AbortController();
  let released = false;
  // A connection lost while the slots are held ends them too; the error must not crash the process.
  client.on('error', (error) => lost.abort(error));
  client.on('end', () => {
    if (!released) lost.abort(new Error('the connection that held the run-limit slots ended'));
  });
  let wake: (() => void) | undefined;
  // Counts the releases announced, so that one announced during a try is not missed by the wait after it.
  let notices = 0;
  client.on('notification', () => {
    notices++;
    wake?.();
  });
  await client.connect();
  try {
    await client.query(`LISTEN ${SLOT_CHANNEL}`);
    let waiting = false;
    let slots: string[] | undefined;
    for (;;) {
      if (options.signal.aborted) throw stoppedWaiting(wants, options.signal.reason);
      if (lost.signal.aborted) throw lost.signal.reason;
      const seen = notices;
      const attempt = await tryAll(client, wants);
      if (attempt.taken) {
        slots = attempt.taken;
        break;
      }
      const full = attempt.full;
      if (!waiting) {
        waiting = true;
        options.onWait?.(full);
      }
      if (notices !== seen) continue;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          options.signal.removeEventListener('abort', done);
          lost.signal.removeEventListener('abort', done);
          wake = undefined;
          resolve();
        };
        wake = done;
        const timer = setTimeout(done, options.pollMs * (0.5 + Math.random()));
        options.signal.addEventListener('abort', done, { once: true });
        lost.signal.addEventListener('abort', done, { once: true });
      });
    }
    await client.query(`UNLISTEN ${SLOT_CHANNEL}`);
    return holding(client, slots ?? [], lost.signal, () => {
      released = true;
    });
  } catch (error) {
    released = true;
    await client.end().catch(() => undefined);
    throw error;
  }
}

/** The {@link HeldSlots} of `client`'s `slots`; `markReleased` tells the connection's `end` handler the end is wanted. */
function holding(client: pg.Client, slots: string[], lost: AbortSignal, markReleased: () => void): HeldSlots {
  let released = false;
  return {
    slots,
    lost,
    release: async () => {
      if (released) return;
      released = true;
      markReleased();
      try {
        await client.query('SELECT pg_advisory_unlock_all()');
        await client.query(`NOTIFY ${SLOT_CHANNEL}`);
      } catch {
        // The connection is gone: its locks ended with it. Ending the client below ends them in any case.
      } finally {
        await client.end().catch(() => undefined);
      }
    },
  };
}

/**
 * Tries to take one slot of each limit, starting at a random slot so that waiting runs spread
 * over the slots. Resolves the slots taken when it holds one of each; otherwise gives back what
 * it took and resolves the limit that was full.
 */
async function tryAll(
  client: pg.Client,
  wants: readonly LimitWant[],
): Promise<{ taken: string[]; full?: undefined } | { taken?: undefined; full: LimitWant }> {
  const taken: string[] = [];
  for (const want of wants) {
    const first = Math.floor(Math.random() * want.limit);
    let got: string | undefined;
    for (let i = 0; i < want.limit && got === undefined; i++) {
      const slot = (first + i) % want.limit;
      const { rows } = await client.query<{ ok: boolean }>(
        'SELECT pg_try_advisory_lock($1, $2) AS ok',
        limitSlotKey(want.scope, want.key, slot),
      );
      if (rows[0]?.ok) got = `${want.scope}:${want.key}#${slot}`;
    }
    if (got === undefined) {
      if (taken.length > 0) await client.query('SELECT pg_advisory_unlock_all()');
      return { full: want };
    }
    taken.push(got);
  }
  return { taken };
}

function stoppedWaiting(wants: readonly LimitWant[], reason: unknown): ConflictError {
  const what = wants.map((want) => `${want.scope} ${want.key} (${want.limit} at once)`).join(', ');
  return new ConflictError(
    `stopped waiting for a run-limit slot of ${what}: ${reason instanceof Error ? reason.message : String(reason)}`,
    { details: { limits: wants.map((want) => ({ ...want })) } },
  );
}
