import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ReplikitError } from '@replikit/core';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { XapiFault } from '../src/index.js';
import { applianceTarget, isAlive, makeAppliance, makeTemplate, processesNaming } from './helpers/appliance.js';
import { makeVm, type SimFixture, startSim } from './helpers/sim-fixture.js';

/*
 * Issue 16, point 5 and its ABD acceptance: an appliance's VM.start spawns a real replikit-agent
 * (a child process) at the appliance's loopback address; a real TLS-PSK client (the transport's
 * remote target and its block transport) writes a plugged VDI through it.
 */

const MiB = 1024 * 1024;
const dirs: string[] = [];
let fx: SimFixture;

beforeEach(async () => {
  fx = await startSim();
  dirs.push(fx.dir);
});
afterEach(async () => {
  await fx.close();
});
afterAll(() => {
  // No agent of any simulator of this file outlives it.
  for (const dir of dirs) expect(processesNaming(join(dir, 'appliances'))).toEqual([]);
});

async function failure(promise: Promise<unknown>): Promise<XapiFault & ReplikitError> {
  try {
    await promise;
  } catch (error) {
    return error as XapiFault & ReplikitError;
  }
  throw new Error('expected a failure');
}

/** A VDI of `size` bytes on `sr` with a VBD to the appliance at `userdevice`. */
async function diskFor(vm: string, userdevice: string, size = 4 * MiB, sr = fx.sim.refs.sr) {
  const vdi = await fx.call<string>('VDI.create', {
    name_label: `disk ${userdevice}`,
    SR: sr,
    virtual_size: size,
    type: 'user',
  });
  const vbd = await fx.call<string>('VBD.create', { VM: vm, VDI: vdi, userdevice, mode: 'RW', type: 'Disk' });
  return { vdi, vbd, uuid: await fx.call<string>('VDI.get_uuid', vdi) };
}

describe('the delegate appliance (ABD)', () => {
  it('VM.start runs an agent at its address; a plugged VDI written through it lands in the file; unplug refuses writes; shutdown ends it', async () => {
    const abd = await makeAppliance(fx, await makeTemplate(fx), 'abd-1');
    const data = await diskFor(abd.vm, '1');
    await fx.call('VM.start', abd.vm, false, false);
    const info = fx.sim.appliance(abd.vm)!;
    expect(info.address).toEqual({ host: abd.ip, port: abd.port });
    expect(isAlive(info.pid)).toBe(true);

    const target = applianceTarget(abd);
    try {
      // Reachable over TLS-PSK at the appliance's address: its one VM is the appliance, its disks the plugged VDIs.
      const vm = await target.getVM(abd.uuid);
      expect(vm.disks.map((d) => [d.id, d.size, d.meta?.device])).toEqual([[data.uuid, 4 * MiB, '1']]);

      const replica = await target.ensureReplica({
        name: 'web-01 replica',
        source: vm,
        disks: [{ sourceDiskId: 'web-01 disk 0', size: 4 * MiB }],
        placement: { vdis: [data.uuid] },
      });
      const block = randomBytes(MiB);
      const channel = await target.transport.open({ runId: 'run-1', replica, blockSize: MiB, digest: 'sha256' });
      const disk = await channel.openDisk(replica.disks[0]!);
      await disk.send({ kind: 'data', index: 2, data: block });
      await disk.checkpoint();
      await disk.close();
      await channel.close();
      const file = await readFile(fx.sim.vdiPath(data.vdi));
      expect(Buffer.compare(file.subarray(2 * MiB, 3 * MiB), block)).toBe(0);
      expect(file.subarray(0, 2 * MiB).every((b) => b === 0)).toBe(true);

      // A session open before the unplug cannot write after it.
      const again = await target.transport.open({ runId: 'run-2', replica, blockSize: MiB, digest: 'sha256' });
      const open = await again.openDisk(replica.disks[0]!);
      await fx.call('VBD.unplug', data.vbd);
      const refused = await failure(
        (async () => {
          await open.send({ kind: 'data', index: 0, data: randomBytes(MiB) });
          await open.checkpoint();
        })(),
      );
      expect(refused.message).toMatch(/not plugged into appliance 'abd-1'/);
      await again.close().catch(() => undefined);
      expect((await readFile(fx.sim.vdiPath(data.vdi))).subarray(0, MiB).every((b) => b === 0)).toBe(true);
      // …and a new one is refused at once: the appliance no longer has the disk.
      expect((await target.getVM(abd.uuid)).disks).toEqual([]);
      const fresh = await target.transport.open({ runId: 'run-3', replica, blockSize: MiB, digest: 'sha256' });
      expect((await failure(fresh.openDisk(replica.disks[0]!))).code).toMatch(/E_NOT_FOUND|E_TRANSPORT/);
      await fresh.close().catch(() => undefined);
    } finally {
      await target.close();
    }

    await fx.call('VM.shutdown', abd.vm);
    expect(isAlive(info.pid)).toBe(false);
    expect(fx.sim.appliance(abd.vm)).toBeUndefined();
    const log = await readFile(join(info.folder, 'agent.log'), 'utf8');
    expect(log).toContain('stopping');
    expect(log).not.toContain(Buffer.from(abd.key).toString('hex'));
  });
});
