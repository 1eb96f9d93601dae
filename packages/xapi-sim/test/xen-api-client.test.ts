import { CancelToken } from 'promise-toolbox';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Xapi, XapiRecord } from 'xen-api';
import { CLASSES } from '../src/model/wire.js';
import { connectClient, makeVm, type SimFixture, startSim } from './helpers/sim-fixture.js';

const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => ({ code: 'resolved', params: [] as string[] }),
    (e: { code?: string; params?: string[]; message?: string }) => ({ code: e.code ?? e.message, params: e.params }),
  );

/** Waits until the client's cache holds an object matching `pred` (through events, no sleeping). */
function waitObject(xapi: Xapi, pred: (o: XapiRecord) => boolean): Promise<XapiRecord> {
  const found = Object.values(xapi.objects.all).find(pred);
  if (found !== undefined) return Promise.resolve(found);
  return new Promise((resolve) => {
    const onChange = (objects: Record<string, XapiRecord>) => {
      const hit = Object.values(objects).find(pred);
      if (hit !== undefined) {
        xapi.objects.removeListener('add', onChange);
        xapi.objects.removeListener('update', onChange);
        resolve(hit);
      }
    };
    xapi.objects.on('add', onChange);
    xapi.objects.on('update', onChange);
  });
}

describe('the real xen-api client against the simulator', () => {
  let fx: SimFixture;
  let xapi: Xapi | undefined;
  beforeEach(async () => {
    fx = await startSim();
  });
  afterEach(async () => {
    await xapi?.disconnect();
    xapi = undefined;
    await fx.close();
  });

  it('connects over JSON-RPC and lists every class with full, consistent records', async () => {
    await makeVm(fx, 'alpha');
    await fx.call('task.create', 'a task', '');
    xapi = await connectClient(fx.sim);
    const byType = xapi.objects.indexes.type;
    for (const cls of CLASSES) {
      const objects = Object.values(byType[cls] ?? {});
      expect(objects.length, cls).toBeGreaterThan(0);
      for (const o of objects) expect(typeof o.uuid).toBe('string');
    }
    const vm = Object.values(byType.VM!).find((o) => o.name_label === 'alpha')!;
    expect(vm.power_state).toBe('Halted');
    const vbd = xapi.getObjectByRef((vm.VBDs as string[])[0]!);
    const vdi = xapi.getObjectByRef(vbd.VDI as string);
    expect(vdi.VBDs).toEqual([vbd.$ref]);
    expect((xapi.getObjectByRef(vdi.SR as string).VDIs as string[]).includes(vdi.$ref)).toBe(true);
    const response = await fetch(`${fx.sim.url}/jsonrpc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'system.listMethods', params: [], id: 7 }),
    });
    expect(response.headers.get('content-type')).toBe('application/json');
    const body = (await response.json()) as { jsonrpc: string; id: number; result: string[] };
    expect(body).toMatchObject({ jsonrpc: '2.0', id: 7 });
    expect(body).not.toHaveProperty('error');
    expect(body.result).toContain('VM.get_all_records');
    expect(body.result).toContain('Async.VM.snapshot');
  });

  it('works over the XML-RPC fallback too', async () => {
    const { vm } = await makeVm(fx, 'beta');
    xapi = await connectClient(fx.sim, 'xml-rpc');
    expect(xapi.getObjectByRef(vm).name_label).toBe('beta');
    await xapi.call('VM.add_to_other_config', vm, 'k', 'v');
    expect(await xapi.call('VM.get_other_config', vm)).toMatchObject({ k: 'v' });
    expect(await codeOf(xapi.call('VM.add_to_other_config', vm, 'k', 'w'))).toMatchObject({
      code: 'MAP_DUPLICATE_KEY',
      params: ['VM', 'other_config', xapi.getObjectByRef(vm).uuid, 'k'],
    });
    const snap = await xapi.callAsync<string>('VM.snapshot', vm, 'snap');
    expect(snap).toMatch(/^OpaqueRef:/);
  });

  it('delivers changes as events and runs tasks to success, failure and cancel', async () => {
    xapi = await connectClient(fx.sim);
    const ref = await xapi.callAsync<string>('VM.create', { name_label: 'gamma' });
    expect(ref).toMatch(/^OpaqueRef:/);
    const seen = await waitObject(xapi, (o) => o.$type === 'VM' && o.name_label === 'gamma');
    expect(seen.$ref).toBe(ref);

    await xapi.call('VM.set_name_label', ref, 'gamma 2');
    await waitObject(xapi, (o) => o.$ref === ref && o.name_label === 'gamma 2');

    expect(await xapi.callAsync('VM.start', ref, false, false)).toBe('');
    await waitObject(xapi, (o) => o.$ref === ref && o.power_state === 'Running');
    expect(await codeOf(xapi.callAsync('VM.start', ref, false, false))).toEqual({
      code: 'VM_BAD_POWER_STATE',
      params: [ref, 'halted', 'running'],
    });

    const release = fx.sim.hold('VM.clean_shutdown');
    const { cancel, token } = CancelToken.source();
    const pending = xapi.callAsync(token, 'VM.clean_shutdown', ref);
    await waitObject(xapi, (o) => o.$type === 'task' && o.name_label === 'Async.VM.clean_shutdown');
    cancel();
    await expect(pending).rejects.toMatchObject({ message: 'task canceled' });
    release();
    expect(await xapi.call('VM.get_power_state', ref)).toBe('Running');
  });

  it('reports XAPI error codes with their parameters', async () => {
    const { vm, vdi } = await makeVm(fx, 'delta');
    xapi = await connectClient(fx.sim);
    expect(await codeOf(xapi.call('VM.get_record', 'OpaqueRef:nope'))).toEqual({
      code: 'HANDLE_INVALID',
      params: ['VM', 'OpaqueRef:nope'],
    });
    expect(await codeOf(xapi.call('VM.start', vm))).toEqual({
      code: 'MESSAGE_PARAMETER_COUNT_MISMATCH',
      params: ['VM.start', '4', '2'],
    });
    expect(await codeOf(xapi.call('VM.no_such_thing', vm))).toEqual({
      code: 'MESSAGE_METHOD_UNKNOWN',
      params: ['VM.no_such_thing'],
    });
    await xapi.call('VM.add_to_blocked_operations', vm, 'start', 'replica: clone it to use it');
    expect(await codeOf(xapi.callAsync('VM.start', vm, false, false))).toEqual({
      code: 'OPERATION_BLOCKED',
      params: [vm, 'replica: clone it to use it'],
    });
    await xapi.call('VM.remove_from_blocked_operations', vm, 'start');
    await xapi.callAsync('VM.start', vm, false, false);
    expect(await codeOf(xapi.callAsync('VDI.destroy', vdi))).toEqual({ code: 'VDI_IN_USE', params: [vdi, 'destroy'] });
    expect(
      await codeOf(xapi.callAsync('VDI.create', { SR: fx.sim.refs.sr, virtual_size: 2 ** 41, type: 'user' })),
    ).toMatchObject({
      code: 'SR_FULL',
    });
  });

  it('refuses calls from a session that logged out (SESSION_INVALID) and bad passwords', async () => {
    const rpc = async (method: string, params: unknown[]) => {
      const r = await fetch(`${fx.sim.url}/jsonrpc`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', method, params, id: 0 }),
      });
      return (await r.json()) as { result?: unknown; error?: { code: number; message: string; data: string[] } };
    };
    const login = await rpc('session.login_with_password', ['root', 'password', '1.0', 'test']);
    const session = login.result as string;
    expect((await rpc('pool.get_all', [session])).result).toEqual([fx.sim.refs.pool]);
    expect(await rpc('session.logout', [session])).toEqual({ jsonrpc: '2.0', result: '', id: 0 });
    expect((await rpc('pool.get_all', [session])).error).toEqual({
      code: 1,
      message: 'SESSION_INVALID',
      data: [session],
    });
    expect((await rpc('session.login_with_password', ['root', 'wrong'])).error?.message).toBe(
      'SESSION_AUTHENTICATION_FAILED',
    );
  });
});
