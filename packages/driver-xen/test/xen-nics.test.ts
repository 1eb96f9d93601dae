import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine } from '@replikit/core';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;

// A replica keeps what a failed-over VM needs to be reached and to boot: its interfaces on the
// mapped networks with the source's MACs, and the source's boot firmware.
describe('xen ► xen: networks, MACs and firmware of the replica', () => {
  let pool: TestPool;
  let dir: string;
  let xen: XenDriver;
  let engine: ReplicationEngine | undefined;
  afterEach(async () => {
    await engine?.close();
    await xen?.close();
    await pool?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('getVM reports networks, MACs and firmware; the replica gets VIFs with the source MACs on mapped networks', async () => {
    pool = await startPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-nics-'));
    xen = await pool.driver();
    const vm = await pool.makeVM('nics', [MiB]);
    const dmz = await pool.call<string>('network.create', { name_label: 'dmz' });
    const dr = await pool.call<string>('network.create', { name_label: 'dr-site' });
    const isolated = await pool.call<string>('network.create', { name_label: 'lab' });
    // makeVM gave it device 0 on the management network; device 2's MAC is made by the pool.
    await pool.call('VIF.create', { VM: vm.ref, network: dmz, device: '1', MAC: '52:54:00:AB:CD:EF' });
    await pool.call('VIF.create', { VM: vm.ref, network: pool.sim.refs.network, device: '2', MAC: '' });
    await pool.call('VIF.create', { VM: vm.ref, network: isolated, device: '3', MAC: '' });
    await expect(
      pool.call('VIF.create', { VM: vm.ref, network: dmz, device: '4', MAC: 'not-a-mac' }),
    ).rejects.toMatchObject({ xapiCode: 'MAC_INVALID' });
    await pool.call('VM.set_HVM_boot_params', vm.ref, { order: 'cd', firmware: 'uefi' });
    const uuidOf = (ref: string) => pool.call<string>('network.get_uuid', ref);

    const info = await xen.getVM(vm.uuid);
    expect(info.firmware).toBe('uefi');
    const management = await uuidOf(pool.sim.refs.network);
    expect(info.networks).toEqual([management, await uuidOf(dmz), management, await uuidOf(isolated)]);
    expect(info.macs![1]).toBe('52:54:00:ab:cd:ef');
    expect(info.macs![2]).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);

    engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(xenDriver),
      ruleSets: [],
      transport: localTransport(),
    });
    const endpoint = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV };
    const record = await engine.run({
      name: 'nics',
      source: { ...endpoint, vm: 'nics' },
      // dmz → dr-site; the management network is on this pool too: kept; 'lab' → a network this
      // pool lacks: no VIF (the driver warns).
      target: {
        ...endpoint,
        replicaName: 'nics',
        networkMap: {
          [await uuidOf(dmz)]: await uuidOf(dr),
          [await uuidOf(isolated)]: '00000000-0000-0000-0000-000000000000',
        },
      },
      method: 'qhybrid',
    });
    expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
    const replicaRef = await pool.call<string>('VM.get_by_uuid', record.replica!.id);
    const vifs = await Promise.all(
      (await pool.call<string[]>('VM.get_VIFs', replicaRef)).map((v) =>
        pool.call<Record<string, unknown>>('VIF.get_record', v),
      ),
    );
    const byDevice = vifs.sort((a, b) => Number(a.device) - Number(b.device)).map((v) => [v.device, v.network, v.MAC]);
    expect(byDevice).toEqual([
      ['0', pool.sim.refs.network, info.macs![0]],
      ['1', dr, '52:54:00:ab:cd:ef'],
      ['2', pool.sim.refs.network, info.macs![2]],
    ]);
    expect(await pool.call('VM.get_HVM_boot_params', replicaRef)).toMatchObject({ firmware: 'uefi' });
    // A source of another kind spells its MACs its own way (Hyper-V: 12 bare hex digits).
    const foreign = await xen.ensureReplica({
      name: 'from-hyperv',
      source: {
        ...info,
        id: 'hv-vm',
        name: 'hv',
        networks: [management, management],
        macs: ['00155D0A0B0C', 'not a mac'],
      },
      disks: [{ sourceDiskId: 'hv-disk', size: MiB }],
    });
    const foreignRef = await pool.call<string>('VM.get_by_uuid', foreign.id);
    const foreignMacs = await Promise.all(
      (await pool.call<string[]>('VM.get_VIFs', foreignRef)).map((v) => pool.call<string>('VIF.get_MAC', v)),
    );
    expect(foreignMacs).toHaveLength(2); // 'not a mac' got one the pool made
    expect(foreignMacs).toContain('00:15:5d:0a:0b:0c');
    expect((await xen.getVM(record.replica!.id)).firmware).toBe('uefi');
  });
});
