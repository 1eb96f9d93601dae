import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { startRpcCuttingProxy } from './helpers/rpc-cutting-proxy.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

const FAST = { retry: { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 } };

describe('the XAPI connection: retries, cancellation, errors', () => {
  let pool: TestPool;
  let hv: XenDriver;
  beforeEach(async () => {
    pool = await startPool();
    hv = await pool.driver({}, FAST);
  });
  afterEach(async () => {
    await hv.close();
    await pool.close();
  });

  it('close() leaves no socket open to the pool: a process exits when its work is done', async () => {
    const port = Number(new URL(pool.sim.url).port);
    const socketsToPool = () =>
      (process as unknown as { _getActiveHandles(): Array<{ remotePort?: number; destroyed?: boolean }> })
        ._getActiveHandles()
        .filter((h) => h.remotePort === port && h.destroyed === false).length;
    const before = socketsToPool();
    const other = await pool.driver({}, FAST);
    const vm = await pool.makeVM('closing', [1 << 20]);
    await other.snapshot(vm.uuid, 'a task, so the event loop polls');
    // The client's event loop polls again a moment after the task's events (its debounce): wait
    // for its connection (a condition, not a time; bounded so that a client that never polls fails).
    for (let i = 0; i < 500 && socketsToPool() <= before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(socketsToPool()).toBeGreaterThan(before);
    const warn = vi.spyOn(console, 'warn');
    try {
      await other.close();
      await new Promise((resolve) => setImmediate(resolve)); // the client's loop sees its poll end
      // A pending event.from (up to 60 s on a real pool) kept the process alive after its run.
      expect(socketsToPool()).toBe(before);
      expect(warn).not.toHaveBeenCalled(); // closing is not an event-loop failure worth a warning
    } finally {
      warn.mockRestore();
    }
  });

  it('retries a task refused with TOO_MANY_PENDING_TASKS or VDI_IN_USE, then succeeds', async () => {
    const vm = await pool.makeVM('busy', [1 << 20]);
    const conn = hv.connection;
    pool.sim.faults.failNext('VM.snapshot', 'TOO_MANY_PENDING_TASKS');
    pool.sim.faults.failNext('VM.snapshot', 'VDI_IN_USE', 'OpaqueRef:x', 'snapshot');
    const snap = await hv.snapshot(vm.uuid, 'after a busy pool');
    expect(snap.disks).toHaveLength(1);
    expect(conn.retries.get('TOO_MANY_PENDING_TASKS')).toBe(1);
    expect(conn.retries.get('VDI_IN_USE')).toBe(1);
  });

  it('gives up after its attempts with E_DRIVER carrying the XAPI code in details', async () => {
    const vm = await pool.makeVM('full', [1 << 20]);
    pool.sim.faults.failNext('VM.snapshot', 'SR_FULL', '100', '10');
    const error = await hv.snapshot(vm.uuid, 'no room').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'E_DRIVER', details: { xapiCode: 'SR_FULL', xapiParams: ['100', '10'] } });
    expect((error as Error).message).toMatch(/SR_FULL\(100, 10\)/);
    expect((error as Error).message).not.toMatch(/\n/);
  });

  it('cancels a pending task on the pool when the signal fires, with E_ABORTED', async () => {
    const vm = await pool.makeVM('slow', [1 << 20]);
    const release = pool.sim.hold('VM.snapshot');
    const controller = new AbortController();
    const tasksBefore = Object.keys(await pool.call<Record<string, unknown>>('task.get_all_records')).length;
    const pending = hv.snapshot(vm.uuid, 'cancelled', { signal: controller.signal });
    // wait for the task to exist on the pool, then cancel
    for (;;) {
      const tasks = await pool.call<Record<string, { status: string }>>('task.get_all_records');
      if (Object.keys(tasks).length > tasksBefore) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: 'E_ABORTED' });
    release();
    const tasks = Object.values(
      await pool.call<Record<string, { status: string; name_label: string }>>('task.get_all_records'),
    );
    expect(tasks.filter((t) => t.status === 'pending')).toEqual([]);
    expect((await hv.listSnapshots(vm.uuid)).map((s) => s.label)).not.toContain('cancelled');
  });

  it('retries a call whose connection dropped before XAPI saw it, and takes one snapshot', async () => {
    const vm = await pool.makeVM('dropped', [1 << 20]);
    const proxy = await startRpcCuttingProxy(Number(new URL(pool.sim.url).port), 'Async.VM.snapshot');
    const viaProxy = await pool.driver({ url: proxy.url }, FAST);
    try {
      const snap = await viaProxy.snapshot(vm.uuid, 'through a cut');
      expect(proxy.cuts()).toBe(1);
      expect(viaProxy.connection.retries.get('DROPPED_CONNECTION')).toBe(1);
      expect((await hv.listSnapshots(vm.uuid)).map((s) => s.id)).toEqual([snap.id]);
    } finally {
      await viaProxy.close();
      await proxy.close();
    }
  });

  it('an unknown VM is E_NOT_FOUND, by uuid or by a hostile name', async () => {
    await expect(hv.getVM('00000000-0000-0000-0000-000000000000')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    await expect(hv.getVM('$(touch /tmp/pwned) `id` "\'\n')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });
});
