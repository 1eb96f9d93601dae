import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ReplikitError } from '@replikit/core';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { populateDemo, type XapiFault, XenAbdDriver } from '../src/index.js';
import {
  applianceTarget,
  freshLoopback,
  isAlive,
  makeAppliance,
  makeTemplate,
  opensslPskHandshake,
  processesNaming,
} from './helpers/appliance.js';
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
  for (const dir of dirs) expect(processesNaming(dir)).toEqual([]);
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
  it('VM.start of a clone of the demo template runs an agent at its address; a plugged VDI written through it lands in the file; unplug refuses writes; shutdown ends it', async () => {
    const { template } = await populateDemo(fx.sim);
    const abd = await makeAppliance(fx, template, 'abd-1');
    const data = await diskFor(abd.vm, '1');
    await fx.call('VM.start', abd.vm, false, false);
    const info = fx.sim.appliance(abd.vm)!;
    expect(info.address).toEqual({ host: abd.ip, port: abd.port });
    expect(isAlive(info.pid)).toBe(true);

    // A TLS client we did not write completes the PSK handshake at that address, and fails it with another key.
    const hello = await opensslPskHandshake(abd, Buffer.from(abd.key).toString('hex'));
    expect(hello.code, hello.out).toBe(0);
    expect(hello.out).toMatch(/CONNECTION ESTABLISHED[\s\S]*Protocol version: TLSv1\.[23]/);
    expect((await opensslPskHandshake(abd, randomBytes(32).toString('hex'))).code).not.toBe(0);

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

  it('sees only the SRs it is configured for; VBD.plug of a VDI in use elsewhere is VDI_IN_USE; power states as XAPI', async () => {
    const other = await fx.sim.addSr('second SR');
    const localUuid = await fx.call<string>('SR.get_uuid', fx.sim.refs.sr);
    const abd = await makeAppliance(fx, await makeTemplate(fx), 'abd-srs', {
      extra: { 'vm-data/replikit/srs': localUuid },
    });
    const seen = await diskFor(abd.vm, '1');
    const unseen = await diskFor(abd.vm, '2', MiB, other);
    expect((await failure(fx.call('VBD.plug', seen.vbd))).description).toEqual([
      'VM_BAD_POWER_STATE',
      abd.vm,
      'running',
      'halted',
    ]);
    await fx.call('VM.start', abd.vm, false, false);
    expect((await failure(fx.call('VM.start', abd.vm, false, false))).description).toEqual([
      'VM_BAD_POWER_STATE',
      abd.vm,
      'halted',
      'running',
    ]);
    expect((await failure(fx.call('VBD.plug', seen.vbd))).description).toEqual(['DEVICE_ALREADY_ATTACHED', seen.vbd]);

    // A VDI a running VM has attached read-write cannot be plugged into the appliance too.
    const web = await makeVm(fx, 'web-01');
    await fx.call('VM.start', web.vm, false, false);
    const stolen = await fx.call<string>('VBD.create', {
      VM: abd.vm,
      VDI: web.vdi,
      userdevice: '3',
      mode: 'RW',
      type: 'Disk',
    });
    expect((await failure(fx.call('VBD.plug', stolen))).description).toEqual(['VDI_IN_USE', web.vdi, 'plug']);
    // Nor can a VM start with it: its attach at start meets the same writer.
    const twin = await fx.call<string>('VM.create', { name_label: 'twin' });
    await fx.call('VBD.create', { VM: twin, VDI: web.vdi, userdevice: '0', mode: 'RW', type: 'Disk' });
    expect((await failure(fx.call('VM.start', twin, false, false))).description).toEqual([
      'VDI_IN_USE',
      web.vdi,
      'start',
    ]);
    expect(await fx.call('VM.get_power_state', twin)).toBe('Halted');
    await fx.call('VM.hard_shutdown', web.vm);
    await fx.call('VBD.plug', stolen);

    const target = applianceTarget(abd);
    try {
      const vm = await target.getVM(abd.uuid);
      expect(vm.disks.map((d) => d.id).sort()).toEqual(
        [seen.uuid, await fx.call<string>('VDI.get_uuid', web.vdi)].sort(),
      );
      const refused = await failure(
        target.ensureReplica({
          name: 'r',
          source: vm,
          disks: [{ sourceDiskId: 'd0', size: MiB }],
          placement: { vdis: [unseen.uuid] },
        }),
      );
      expect(refused.code).toBe('E_INPUT');
      expect(refused.message).toMatch(/not configured to see/);
      // By device too: device 1 is the VDI on the SR it sees.
      const byDevice = await target.ensureReplica({
        name: 'r',
        source: vm,
        disks: [{ sourceDiskId: 'd0', size: MiB }],
        placement: { vdis: ['device:1'] },
      });
      expect(byDevice.disks.map((d) => d.id)).toEqual([seen.uuid]);
    } finally {
      await target.close();
    }
    const pid = fx.sim.appliance(abd.vm)!.pid;
    await fx.call('VM.hard_shutdown', abd.vm);
    expect(isAlive(pid)).toBe(false);
    expect((await failure(fx.call('VBD.unplug', seen.vbd))).description).toEqual([
      'VM_BAD_POWER_STATE',
      abd.vm,
      'running',
      'halted',
    ]);
  });

  it('refuses a second appliance (a VM.copy of the template) claiming the same address; close() stops every agent', async () => {
    const template = await makeTemplate(fx);
    const first = await makeAppliance(fx, template, 'abd-a');
    const second = await makeAppliance(fx, template, 'abd-b', { ip: first.ip, copy: true });
    await fx.call('VM.start', first.vm, false, false);
    const clash = await failure(fx.call('VM.start', second.vm, false, false));
    expect(clash.description[0]).toBe('INTERNAL_ERROR');
    expect(clash.description[1]).toMatch(new RegExp(`'abd-b'.*claims ${first.ip.replace(/\./g, '\\.')}.*'abd-a'`));
    expect(await fx.call('VM.get_power_state', second.vm)).toBe('Halted');
    // Without a key the appliance does not start either, and the message does not echo any key.
    const keyless = await makeAppliance(fx, template, 'abd-c');
    await fx.call('VM.remove_from_xenstore_data', keyless.vm, 'vm-data/replikit/psk');
    expect((await failure(fx.call('VM.start', keyless.vm, false, false))).description[1]).toMatch(
      /vm-data\/replikit\/psk/,
    );
    // Another address is fine; close() then stops both agents.
    await fx.call('VM.set_xenstore_data', second.vm, {
      ...(await fx.call<Record<string, string>>('VM.get_xenstore_data', second.vm)),
      'vm-data/ip': freshLoopback(),
    });
    await fx.call('VM.start', second.vm, false, false);
    const pids = [fx.sim.appliance(first.vm)!.pid, fx.sim.appliance(second.vm)!.pid];
    expect(pids.every(isAlive)).toBe(true);
    await fx.sim.close();
    expect(pids.some(isAlive)).toBe(false);
  });

  it('VM.destroy of an appliance needs it halted; a simulator killed with SIGKILL leaves no agent behind', async () => {
    const abd = await makeAppliance(fx, await makeTemplate(fx), 'abd-gone');
    await fx.call('VM.start', abd.vm, false, false);
    const running = fx.sim.appliance(abd.vm)!.pid;
    expect((await failure(fx.call('VM.destroy', abd.vm))).description).toEqual([
      'VM_BAD_POWER_STATE',
      abd.vm,
      'halted',
      'running',
    ]);
    expect(isAlive(running)).toBe(true);
    await fx.call('VM.clean_shutdown', abd.vm);
    await fx.call('VM.destroy', abd.vm);
    expect(isAlive(running)).toBe(false);

    const child = spawn(
      process.execPath,
      [
        '--conditions=@replikit/source',
        '--import',
        'tsx',
        join(dirname(fileURLToPath(import.meta.url)), 'helpers/abd-sim-child.ts'),
        join(fx.dir, 'killed'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const pid = await new Promise<number>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const line = out.split('\n').find((l) => l.startsWith('{'));
          if (line !== undefined) resolve((JSON.parse(line) as { pid: number }).pid);
        });
        child.once('exit', () => reject(new Error(`the simulator exited early: ${out}`)));
      });
      expect(isAlive(pid)).toBe(true);
      child.kill('SIGKILL');
      await exited;
      // The agent sees its stdin end and stops: wait for that, however long it takes.
      while (isAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(processesNaming(join(fx.dir, 'killed'))).toEqual([]);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('the xen-abd driver reads a plugged VDI as a source appliance would, and not once it is unplugged', async () => {
    const abd = await makeAppliance(fx, await makeTemplate(fx), 'abd-source');
    const snap = await diskFor(abd.vm, '1', 2 * MiB);
    const bytes = randomBytes(3 * 4096);
    await writeFile(fx.sim.vdiPath(snap.vdi), bytes, { flag: 'r+' });
    await fx.call('VM.start', abd.vm, false, false);
    const driver = new XenAbdDriver({ root: fx.sim.appliance(abd.vm)!.folder });
    try {
      const [disk] = (await driver.getVM('abd-source')).disks;
      expect(disk).toMatchObject({ id: snap.uuid, size: 2 * MiB, meta: { device: '1', mode: 'RW' } });
      const reader = await driver.openReader({ id: 'device:1', vmId: abd.uuid, size: 2 * MiB });
      expect(Buffer.compare(Buffer.from(await reader.read(0, bytes.length)), bytes)).toBe(0);
      await fx.call('VBD.unplug', snap.vbd);
      expect((await failure(reader.read(0, 4096))).code).toBe('E_NOT_FOUND');
      expect((await failure(driver.openReader(disk!))).code).toBe('E_NOT_FOUND');
    } finally {
      await driver.close();
    }
  });

  it('an agent that dies on its own is a crash of its appliance: restarted by default, halted with actions_after_crash=destroy', async () => {
    const template = await makeTemplate(fx);
    const restarting = await makeAppliance(fx, template, 'abd-restart');
    await fx.call('VM.start', restarting.vm, false, false);
    const first = fx.sim.appliance(restarting.vm)!.pid;
    process.kill(first, 'SIGKILL');
    // Wait for the new agent, however long it takes to start.
    while ((fx.sim.appliance(restarting.vm)?.pid ?? first) === first) await new Promise((r) => setTimeout(r, 20));
    expect(isAlive(fx.sim.appliance(restarting.vm)!.pid)).toBe(true);
    expect(await fx.call('VM.get_power_state', restarting.vm)).toBe('Running');
    const target = applianceTarget(restarting);
    try {
      expect((await target.getVM(restarting.uuid)).name).toBe('abd-restart');
    } finally {
      await target.close();
    }

    const halting = await makeAppliance(fx, template, 'abd-destroy');
    await fx.call('VM.set_actions_after_crash', halting.vm, 'destroy');
    await fx.call('VM.start', halting.vm, false, false);
    process.kill(fx.sim.appliance(halting.vm)!.pid, 'SIGKILL');
    while (fx.sim.state.db.field<string>('VM', halting.vm, 'power_state') !== 'Halted') {
      await fx.sim.state.db.nextChange();
    }
    expect(fx.sim.appliance(halting.vm)).toBeUndefined();
  });
});
