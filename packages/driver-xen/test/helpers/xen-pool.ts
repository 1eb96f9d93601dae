import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Hypervisor, Replica, VMInfo } from '@replikit/core';
import { startXapiSim, type XapiSim, type XapiSimOptions } from '@replikit/xapi-sim';
import { createXenDriver, type XenDriver, xenDriverOptionsSchema } from '../../src/index.js';

/** The environment variable the tests name as `passwordEnv`. */
export const PASSWORD_ENV = 'REPLIKIT_TEST_XEN_PASSWORD';

/** A simulated pool in a temporary folder, with helpers to make VMs and drivers. */
export interface TestPool {
  readonly sim: XapiSim;
  readonly dir: string;
  /** Calls a XAPI method in-process with a session of the test. */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  /** A connected driver (the test closes it). */
  driver(extra?: Record<string, unknown>, connection?: Parameters<typeof createXenDriver>[1]): Promise<XenDriver>;
  /** A running VM with empty disks of `sizes` bytes, CBT on unless `cbt: false`. */
  makeVM(name: string, sizes: number[], options?: { cbt?: boolean }): Promise<{ ref: string; uuid: string }>;
  /**
   * A user writes into a replica's committed VDI outside replikit, as a tool on the pool would:
   * the whole VDI is read with `GET /export_raw_vdi` and put back changed with `PUT /import_raw_vdi`.
   */
  writeReplicaOutside(hv: XenDriver, replica: Replica, diskId: string, offset: number, data: Uint8Array): Promise<void>;
  /** The guest of VM `vmUuid` writes `data` at `offset` of its disk `diskUuid`. */
  writeGuest(vmUuid: string, diskUuid: string, offset: number, data: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** Starts a simulated pool (NBD on by default). */
export async function startPool(options: Partial<XapiSimOptions> = {}): Promise<TestPool> {
  process.env[PASSWORD_ENV] = 'password';
  const dir = await mkdtemp(join(tmpdir(), 'rk-xen-'));
  const sim = await startXapiSim({ dir, nbd: true, ...options });
  const session = (await sim.call('session.login_with_password', 'root', 'password')) as string;
  const call = async <T>(method: string, ...args: unknown[]) => (await sim.call(method, session, ...args)) as T;
  let devices = 0;
  return {
    sim,
    dir,
    call,
    driver: (extra = {}, connection = {}) =>
      createXenDriver(
        xenDriverOptionsSchema.parse({
          url: sim.url,
          passwordEnv: PASSWORD_ENV,
          ...(sim.url.startsWith('https') ? { allowUnauthorized: true } : {}),
          ...extra,
        }),
        connection,
      ),
    async makeVM(name, sizes, { cbt = true } = {}) {
      const ref = await call<string>('VM.create', { name_label: name, VCPUs_max: 2, memory_static_max: 2 ** 30 });
      for (const [i, size] of sizes.entries()) {
        const vdi = await call<string>('VDI.create', {
          name_label: `${name} disk ${i}`,
          SR: sim.refs.sr,
          virtual_size: size,
          type: 'user',
        });
        if (cbt) await call('VDI.enable_cbt', vdi);
        await call('VBD.create', { VM: ref, VDI: vdi, userdevice: String(i), mode: 'RW', type: 'Disk' });
      }
      await call('VIF.create', {
        VM: ref,
        network: sim.refs.network,
        device: '0',
        MAC: `02:00:00:00:${(devices++).toString(16).padStart(2, '0')}:01`,
      });
      await call('VM.start', ref, false, false);
      return { ref, uuid: await call<string>('VM.get_uuid', ref) };
    },
    async writeReplicaOutside(hv, replica, diskId, offset, data) {
      const disk = replica.disks.find((d) => d.id === diskId);
      if (!disk) throw new Error(`replica ${replica.id} has no disk ${diskId}`);
      const vm = await call<string>('VM.get_by_uuid', replica.id);
      let vdi = '';
      for (const vbd of await call<string[]>('VM.get_VBDs', vm)) {
        if ((await call('VBD.get_userdevice', vbd)) === disk.meta?.userdevice) vdi = await call('VBD.get_VDI', vbd);
      }
      const res = await hv.connection.get('/export_raw_vdi', { vdi, format: 'raw' });
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      const content = new Uint8Array(Buffer.concat(chunks));
      content.set(data, offset);
      const body = (async function* () {
        yield content;
      })();
      await hv.connection.put('/import_raw_vdi', { vdi, format: 'raw' }, body, content.length);
    },
    async writeGuest(vmUuid, diskUuid, offset, data) {
      const vm = await call<string>('VM.get_by_uuid', vmUuid);
      const vdi = await call<string>('VDI.get_by_uuid', diskUuid);
      for (const vbd of await call<string[]>('VM.get_VBDs', vm)) {
        if ((await call<string>('VBD.get_VDI', vbd)) === vdi) {
          return sim.guestWrite(vm, await call<string>('VBD.get_userdevice', vbd), offset, data);
        }
      }
      throw new Error(`disk ${diskUuid} is not attached to VM ${vmUuid}`);
    },
    async close() {
      await sim.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Conformance fixtures over a pool. Disk sizes are kept as asked (the simulator's SR does not
 * round them): the engine check writes a disk's last partial block and compares the whole disk.
 */
export function poolFixtures(pool: () => TestPool, cbt: boolean) {
  return {
    async createSourceVM(hv: Hypervisor, spec: { name: string; disks: Array<{ id: string; size: number }> }) {
      const vm = await pool().makeVM(
        spec.name,
        spec.disks.map((d) => d.size),
        { cbt },
      );
      return hv.getVM(vm.uuid) as Promise<VMInfo>;
    },
    writeGuest: (_hv: Hypervisor, vmId: string, diskId: string, offset: number, data: Uint8Array) =>
      pool().writeGuest(vmId, diskId, offset, data),
    writeOutside: (hv: Hypervisor, replica: Replica, diskId: string, offset: number, data: Uint8Array) =>
      pool().writeReplicaOutside(hv as XenDriver, replica, diskId, offset, data),
  };
}
