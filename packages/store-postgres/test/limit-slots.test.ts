import { isReplikitError } from '@replikit/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LimitWant } from '../src/cluster/run-limits.js';
import { takeLimitSlots } from '../src/limit-slots.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

let server: TestPostgres;
let url: string;
beforeAll(async () => {
  server = await startTestPostgres();
  url = await server.createDatabase();
});
afterAll(async () => {
  await server?.stop();
});

const target = (limit: number): LimitWant => ({ scope: 'target', key: 'file:/srv/replicas', limit });
const never = new AbortController().signal;

/** Takes slots, and tells through `waiting` when the take found its limit full. */
function take(wants: LimitWant[], signal = never) {
  let waited!: () => void;
  const waiting = new Promise<void>((resolve) => {
    waited = resolve;
  });
  const held = takeLimitSlots({ connectionString: url }, wants, { signal, pollMs: 60_000, onWait: () => waited() });
  return { held, waiting };
}

describe('run-limit slots (advisory locks on a connection per run)', () => {
  it('a limit of 2 lets two runs hold a slot; a third waits and gets one when a slot is released (NOTIFY, not the poll)', async () => {
    const a = await take([target(2)]).held;
    const b = await take([target(2)]).held;
    expect(new Set([...a.slots, ...b.slots]).size).toBe(2);
    const third = take([target(2)]);
    await third.waiting;
    // The poll is a minute: only the release's NOTIFY can wake the waiting take before the test's timeout.
    await a.release();
    const c = await third.held;
    expect(c.slots).toEqual(a.slots);
    await b.release();
    await c.release();
  }, 30_000);

  it('a run holding slots of two limits takes both or none (no half-held slots while it waits)', async () => {
    const host: LimitWant = { scope: 'host', key: 'file:/srv/vms', limit: 1 };
    const other = await take([target(1)]).held;
    const both = take([host, target(1)]);
    await both.waiting;
    // The host slot is free while the waiting run waits for the target: another run of that host gets it.
    const hostOnly = await take([host]).held;
    await hostOnly.release();
    await other.release();
    const held = await both.held;
    expect(held.slots.sort()).toEqual(['host:file:/srv/vms#0', 'target:file:/srv/replicas#0']);
    await held.release();
  }, 30_000);

  it('a wait stopped by its signal rejects with E_CONFLICT and holds nothing', async () => {
    const holder = await take([target(1)]).held;
    const stop = new AbortController();
    const waiter = take([target(1)], stop.signal);
    await waiter.waiting;
    stop.abort('draining');
    const error = await waiter.held.catch((e: unknown) => e);
    expect(isReplikitError(error, 'E_CONFLICT')).toBe(true);
    await holder.release();
    const next = await take([target(1)]).held;
    await next.release();
  }, 30_000);

  it('slots end with their connection (a killed worker): the holder is told (lost) and a waiting run gets the slot', async () => {
    const holder = await take([target(1)]).held;
    const waiter = take([target(1)]);
    await waiter.waiting;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      // What PostgreSQL does when a holding process dies: the session ends, and its locks with it.
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`,
      );
    } finally {
      await admin.end();
    }
    await new Promise<void>((resolve) => {
      if (holder.lost.aborted) resolve();
      holder.lost.addEventListener('abort', () => resolve(), { once: true });
    });
    // No NOTIFY came from the dead session: the waiter finds the slot at its next poll; here it
    // is woken by a release elsewhere instead of waiting the minute.
    const nudge = await take([{ scope: 'target', key: 'another', limit: 1 }]).held;
    await nudge.release();
    const next = await waiter.held;
    expect(next.slots).toEqual(['target:file:/srv/replicas#0']);
    await next.release();
    await holder.release();
  }, 30_000);
});
