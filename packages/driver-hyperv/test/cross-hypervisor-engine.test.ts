import { randomInt } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DiskRef,
  DriverRegistry,
  defineDriver,
  FileStateStore,
  type Hypervisor,
  type JobSpecInput,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createXenDriver, type XenDriver, xenDriver, xenDriverOptionsSchema } from '@replikit/driver-xen';
import { adminCmdlet } from '@replikit/hyperv-sim';
import { localTransport } from '@replikit/transport';
import { populateDemo, startXapiSim, type XapiSim } from '@replikit/xapi-sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HYPERV_KIND_CAPABILITIES, HyperVDriver, type HyperVVMInfo, hypervDriverOptionsSchema } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

/*
 * Issue 20, point 3: XenServer ► Hyper-V and Hyper-V ► XenServer with Q-Hybrid, through the engine,
 * with both hosts simulated in the same test (xapi-sim for the pool, hyperv-sim's fake pwsh for the
 * Hyper-V host). Each direction: a full run, guest writes, an incremental run through the SOURCE's
 * tracker (Xen CBT, Hyper-V RCT); the replica equals the source snapshot after each run, and its
 * shape (firmware/generation, MACs, CPUs, memory) is the source's, mapped.
 */

const MiB = 2 ** 20;
const PASSWORD_ENV = 'REPLIKIT_TEST_XEN_PASSWORD';

describe('cross-hypervisor replication with Q-Hybrid on the simulators', { timeout: 300_000 }, () => {
  let hyperv: SimHost;
  let xapi: XapiSim;
  let dir: string;
  let xen: XenDriver;
  let hv: HyperVDriver;
  let session: string;
  const call = async <T>(method: string, ...args: unknown[]) => (await xapi.call(method, session, ...args)) as T;

  beforeAll(async () => {
    process.env[PASSWORD_ENV] = 'password';
    dir = await mkdtemp(join(tmpdir(), 'rk-cross-'));
    hyperv = await startSimHost();
    // An SR that rounds VDI sizes up to 2 MiB, as real SRs round: the replica still presents the
    // source's exact size.
    xapi = await startXapiSim({ dir: join(dir, 'pool'), nbd: true, vdiSizeStep: 2 * MiB });
    session = (await xapi.call('session.login_with_password', 'root', 'password')) as string;
    await populateDemo(xapi); // the appliance template a Xen target's ABD is made from
    const { driver: _kind, ...options } = xenEndpoint();
    xen = await createXenDriver(xenDriverOptionsSchema.parse(options));
    hv = hyperv.sharedDriver();
  }, 120_000);
  afterAll(async () => {
    await xen?.close();
    await hyperv?.close();
    await xapi?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const xenEndpoint = () => ({
    driver: 'xen',
    url: xapi.url,
    passwordEnv: PASSWORD_ENV,
    ...(xapi.url.startsWith('https') ? { allowUnauthorized: true } : {}),
  });

  /** The engine with both kinds and every rule; `hyperv` drives the simulated host through the test's one fake pwsh. */
  function engine(): ReplicationEngine {
    const hypervKind = defineDriver({
      kind: 'hyperv',
      capabilities: HYPERV_KIND_CAPABILITIES,
      options: hypervDriverOptionsSchema,
      create: (options) =>
        new HyperVDriver({
          link: hyperv.link,
          sharedLink: true,
          rct: options.rct,
          openImage: (path) => hyperv.host.openDisk(path),
          target: {
            replicaPath: options.replicaPath,
            networkMap: options.networkMap,
            secureBootTemplate: options.secureBootTemplate,
            onWarning: () => undefined,
          },
        }) as Hypervisor,
    });
    return new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(xenDriver).register(hypervKind),
      transport: localTransport(),
    });
  }

  /**
   * Runs `job`; the run completes, `afterRun` looks at it, and each replica disk equals the snapshot
   * disk it was read from.
   */
  async function replicate(
    e: ReplicationEngine,
    job: JobSpecInput,
    source: Hypervisor,
    target: Hypervisor,
    afterRun?: (record: RunRecord) => void | Promise<void>,
  ): Promise<RunRecord> {
    const record = await e.run(job);
    expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
    await afterRun?.(record); // before the comparison below reads the source's disks whole
    for (const [i, disk] of record.snapshot!.disks.entries()) {
      const replicaDisk: DiskRef = record.replica!.disks[i]!;
      expect(replicaDisk.size).toBe(disk.size);
      expect(compareBytes(await readWholeDisk(target, replicaDisk), await readWholeDisk(source, disk))).toBe('equal');
    }
    return record;
  }

  /**
   * A halted Xen VM with CBT on its disks, `firmware` boot (with `platform` keys such as
   * `secureboot`) and one VIF per MAC on the pool's network.
   */
  async function makeXenVM(
    name: string,
    sizes: number[],
    firmware: 'bios' | 'uefi',
    macs: string[],
    platform: Record<string, string> = {},
  ) {
    const ref = await call<string>('VM.create', {
      name_label: name,
      VCPUs_max: 3,
      VCPUs_at_startup: 3,
      memory_static_max: 1536 * MiB,
      HVM_boot_policy: 'BIOS order',
      HVM_boot_params: { order: 'cd', firmware },
      platform,
    });
    for (const [i, size] of sizes.entries()) {
      const vdi = await call<string>('VDI.create', {
        name_label: `${name} disk ${i}`,
        SR: xapi.refs.sr,
        virtual_size: size,
        type: 'user',
      });
      await call('VDI.enable_cbt', vdi);
      await call('VBD.create', { VM: ref, VDI: vdi, userdevice: String(i), mode: 'RW', type: 'Disk' });
    }
    for (const [i, mac] of macs.entries()) {
      await call('VIF.create', { VM: ref, network: xapi.refs.network, device: String(i), MAC: mac });
    }
    await call('VM.start', ref, false, false);
    return { ref, uuid: await call<string>('VM.get_uuid', ref) };
  }

  it('XenServer ► Hyper-V: UEFI → generation 2 (Secure Boot kept), BIOS → generation 1, MACs kept; full then CBT-tracked run; other methods refused', async () => {
    const e = engine();
    const network = await call<string>('network.get_uuid', xapi.refs.network);
    const replicaPath = join(hyperv.host.root, 'replicas');
    const size = 6 * MiB + 777; // a Xen disk that ends mid-sector: the VHDX is rounded up to whole sectors
    const uefi = await makeXenVM('xen uefi', [size, 2 * MiB], 'uefi', ['02:00:00:aa:00:01', '02:00:00:aa:00:02'], {
      secureboot: 'true',
    });
    await xapi.guestWrite(uefi.ref, '0', 4095, testPattern(1, 300_000));
    await xapi.guestWrite(uefi.ref, '0', size - 5, testPattern(2, 5));
    await xapi.guestWrite(uefi.ref, '1', 0, testPattern(3, 512));
    const job = {
      name: 'xen-to-hyperv',
      source: { ...xenEndpoint(), vm: 'xen uefi' },
      // A Linux guest: Secure Boot through the third-party UEFI CA template.
      target: {
        driver: 'hyperv',
        replicaPath,
        networkMap: { [network]: 'Replica LAN' },
        replicaName: 'xen-uefi',
        secureBootTemplate: 'MicrosoftUEFICertificateAuthority',
      },
      method: 'qhybrid',
    };

    const first = await replicate(e, job, xen, hv);
    expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    const replica = (await hv.getVM(first.replica!.id)) as HyperVVMInfo;
    expect(replica).toMatchObject({ generation: 2, firmware: 'uefi', cpus: 3, memoryMiB: 1536 });
    // platform:secureboot=true → Set-VMFirmware -EnableSecureBoot On with the job's template.
    expect(replica).toMatchObject({ secureBoot: true, secureBootTemplate: 'MicrosoftUEFICertificateAuthority' });
    expect(replica.nics.map((n) => n.macAddress)).toEqual(['020000AA0001', '020000AA0002']);
    expect(replica.macs).toEqual(['02:00:00:aa:00:01', '02:00:00:aa:00:02']);
    expect(replica.nics.map((n) => n.switchName)).toEqual(['Replica LAN', 'Replica LAN']);
    expect(replica.disks.map((d) => d.id)).toEqual(['SCSI:0:0', 'SCSI:0:1']); // generation 2 boots from SCSI
    // The replica VM's own disk refs read too (they were refused: "VM … has no disk 'SCSI:0:0'").
    for (const [i, disk] of first.snapshot!.disks.entries()) {
      expect(compareBytes(await readWholeDisk(hv, replica.disks[i]!), await readWholeDisk(xen, disk))).toBe('equal');
    }

    // 1 % of the first disk, across block edges; the second disk untouched.
    const writes: [number, number][] = [
      [MiB - 3, Math.round(size / 100)],
      [size - 600, 600],
    ];
    for (const [i, [offset, length]] of writes.entries()) {
      await xapi.guestWrite(uefi.ref, '0', offset, testPattern(4 + i, length));
    }
    const touched = new Set(
      writes.flatMap(([offset, length]) => {
        const blocks: number[] = [];
        for (let b = Math.floor(offset / 65_536); b <= Math.floor((offset + length - 1) / 65_536); b++) blocks.push(b);
        return blocks;
      }),
    );
    xapi.nbdStats.reset();
    const second = await replicate(e, job, xen, hv, (record) => {
      // Only what CBT reported crossed, counted where the pool's NBD server sends it.
      const [d0, d1] = record.snapshot!.disks.map((d) => xapi.nbdStats.of(d.meta!.vdi as string));
      expect(d0!.blocks).toBeLessThanOrEqual(touched.size);
      expect(d1!.bytes).toBe(0);
    });
    expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);

    // A BIOS guest boots from IDE on a generation 1 VM.
    await makeXenVM('xen bios', [4 * MiB], 'bios', ['02:00:00:bb:00:01']);
    const bios = await replicate(
      e,
      {
        ...job,
        name: 'xen-bios',
        source: { ...job.source, vm: 'xen bios' },
        target: { ...job.target, replicaName: 'xen-bios' },
      },
      xen,
      hv,
    );
    const biosReplica = await hv.getVM(bios.replica!.id);
    expect(biosReplica).toMatchObject({ generation: 1, firmware: 'bios', macs: ['02:00:00:bb:00:01'] });
    expect(biosReplica.secureBoot).toBeUndefined(); // generation 1 has no Secure Boot
    expect(biosReplica.disks.map((d) => d.id)).toEqual(['IDE:0:0']); // generation 1 boots from IDE 0:0

    // Any other method is refused: E_RULE, the rule's id and reason on one line, then its fix.
    const refused = await e.run({ ...job, name: 'xen-to-hyperv-cbt', method: 'cbt' }).then(
      (record) => record.error,
      (error: unknown) => error,
    );
    expect(refused).toMatchObject({ code: 'E_RULE' });
    expect(String((refused as { message?: unknown }).message).split('\n')).toEqual([
      'the job breaks a rule:',
      "error   xen-to-hyperv-needs-qhybrid: XenServer ► Hyper-V works only with method 'qhybrid', but the job's method is 'cbt'",
      "        fix: Set method to 'qhybrid'.",
    ]);
    await e.close();
  });

  it('XenServer ► Hyper-V of a VM named like a Hyper-V VM already replicated to the host: each replica VM keeps to its own disks and checkpoints', async () => {
    // What `replikit demo --hyperv` does: 'twin' on the Hyper-V host and 'twin' in the pool, of other
    // disk sizes, both replicated to the host. Both replica VMs would be named 'twin-replica', and
    // Hyper-V cmdlets that take a VM name act on every VM of that name.
    const e = engine();
    const replicaPath = join(hyperv.host.root, 'replicas');
    await hyperv.makeVM('twin', [2 * MiB]);
    await hyperv.host.guestWrite('twin', 0, 0, testPattern(21, 70_000));
    const local = await replicate(
      e,
      {
        name: 'twin-hv',
        source: { driver: 'hyperv', vm: 'twin' },
        target: { driver: 'hyperv', replicaPath, replicaName: 'twin-hv' },
        method: 'qhybrid',
        blockSize: 65_536,
      },
      hv,
      hv,
    );
    const xenTwin = await makeXenVM('twin', [4 * MiB], 'uefi', ['02:00:00:cc:00:01']);
    await xapi.guestWrite(xenTwin.ref, '0', 3 * MiB, testPattern(22, 70_000));
    const job = {
      name: 'twin-xen',
      source: { ...xenEndpoint(), vm: 'twin' },
      target: { driver: 'hyperv', replicaPath, replicaName: 'twin-xen' },
      method: 'qhybrid',
      blockSize: 65_536,
    };
    const fromXen = await replicate(e, job, xen, hv);
    await xapi.guestWrite(xenTwin.ref, '0', 0, testPattern(23, 4096));
    const again = await replicate(e, job, xen, hv);
    expect(again.disks.map((d) => d.mode)).toEqual(['tracked']);
    const names = [local, fromXen].map((r) => (r.replica!.meta as { vm: string }).vm);
    expect(new Set(names).size).toBe(2);
    // The Hyper-V replica still equals its source.
    expect(
      compareBytes(
        await readWholeDisk(hv, local.replica!.disks[0]!),
        await readWholeDisk(hv, local.snapshot!.disks[0]!),
      ),
    ).toBe('equal');
    // A VM made by hand afterwards with a replica VM's name: the next run is refused with E_CONFLICT,
    // it does not act on the other VM's checkpoints.
    await adminCmdlet(hyperv.host.root, 'New-VM', { Name: names[1], Generation: 2, NoVHD: true });
    const refused = await e.run(job).then(
      (record) => record.error,
      (error: unknown) => error,
    );
    expect(refused).toMatchObject({
      code: 'E_CONFLICT',
      message: expect.stringMatching(/another VM of the Hyper-V host is named .* rename the other VM/),
    });
    await e.close();
  });

  it('Hyper-V ► XenServer: generation 2 → UEFI (Secure Boot kept), MACs kept, CPUs and memory; full then RCT-tracked run', async () => {
    // The Xen target writes through its ABD (an appliance VM the pool runs; rule xen-target-needs-abd),
    // on loopback addresses of this run.
    const e = engine();
    const base = `127.${randomInt(64, 250)}.${randomInt(1, 250)}`;
    const abd = { ips: [2, 3, 4].map((n) => `${base}.${n}`) };
    const network = await call<string>('network.get_uuid', xapi.refs.network);
    const size = 5 * MiB + 512; // whole sectors, not whole MiB: the SR rounds its VDI up to 6 MiB
    await hyperv.makeVM('hv gen2', [size, 2 * MiB], { generation: 2, cpus: 2 });
    await hyperv.addNic('hv gen2', 'lan', 'LAN');
    await hyperv.addNic('hv gen2', 'dmz', 'DMZ');
    await hyperv.host.guestWrite('hv gen2', 0, 4095, testPattern(11, 200_000));
    await hyperv.host.guestWrite('hv gen2', 0, size - 7, testPattern(12, 7));
    await hyperv.host.guestWrite('hv gen2', 1, MiB, testPattern(13, 4096));
    const source = (await hv.getVM('hv gen2')) as HyperVVMInfo;
    expect(source.firmware).toBe('uefi');
    // New-VM's generation 2 default, as Get-VMFirmware reports it.
    expect(source).toMatchObject({ secureBoot: true, secureBootTemplate: 'MicrosoftWindows' });
    expect(source.macs).toEqual(source.nics.map((n) => n.macAddress.toLowerCase().match(/../g)!.join(':')));
    const job = {
      name: 'hyperv-to-xen',
      source: { driver: 'hyperv', vm: 'hv gen2' },
      target: { ...xenEndpoint(), abd, networkMap: { LAN: network, DMZ: network }, replicaName: 'hv-gen2' },
      method: 'qhybrid',
    };

    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => {
      if (w.code === 'REPLIKIT_XEN_NETWORK_UNMAPPED') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    const first = await replicate(e, job, hv, xen).finally(() => process.off('warning', onWarning));
    expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    // The adapter `New-VM` added is on no switch: said so, not named as a network to map.
    expect(warnings).toEqual([expect.stringMatching(/1 source adapter connected to no network has no VIF/)]);
    expect(warnings.join()).not.toMatch(/''/);
    const replica = await xen.getVM(first.replica!.id);
    expect(replica).toMatchObject({ firmware: 'uefi', secureBoot: true, cpus: 2, memoryMiB: 1024 });
    // `New-VM` adds an unnamed adapter with no switch; the two named ones follow.
    const named = source.nics.filter((n) => n.switchName !== null);
    expect(replica.macs?.filter((_, i) => replica.networks?.[i] === network)).toEqual(
      named.map((n) => n.macAddress.toLowerCase().match(/../g)!.join(':')),
    );
    const vmRef = await call<string>('VM.get_by_uuid', first.replica!.id);
    expect(await call<Record<string, string>>('VM.get_platform', vmRef)).toMatchObject({ secureboot: 'true' });
    const vdi = await call<string>('VBD.get_VDI', (await call<string[]>('VM.get_VBDs', vmRef))[0]);
    expect(Number(await call('VDI.get_virtual_size', vdi))).toBe(6 * MiB); // rounded by the SR

    await hyperv.host.guestWrite('hv gen2', 0, 2 * MiB - 9, testPattern(14, Math.round(size / 100)));
    await hyperv.host.guestWrite('hv gen2', 0, size - 700, testPattern(15, 700));
    const before = new Map(hyperv.host.bytesRead());
    const vm = (await hyperv.host.state()).vms.find((v) => v.name === 'hv gen2')!;
    const readOf = (disk: number) =>
      [...hyperv.host.bytesRead()]
        .filter(([path]) => path.startsWith(vm.drives[disk]!.basePath.replace(/\.vhdx$/, '')))
        .reduce((sum, [path, n]) => sum + n - (before.get(path) ?? 0), 0);
    const second = await replicate(e, job, hv, xen, () => {
      // RCT said the second disk did not change: the host saw only its headers and BAT read.
      expect(readOf(1)).toBeLessThan(2 * MiB);
      expect(readOf(0)).toBeLessThan(size);
    });
    expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    // The writes went through the appliance the target made, halted again after the run.
    const vms =
      await call<Record<string, { other_config: Record<string, string>; power_state: string }>>('VM.get_all_records');
    const appliances = Object.values(vms).filter((vm) => vm.other_config['replikit:abd'] === 'appliance');
    expect(appliances.map((vm) => vm.power_state)).toEqual(['Halted']);

    // A generation 1 VM is a BIOS guest.
    await hyperv.makeVM('hv gen1', [MiB], { generation: 1 });
    expect((await hv.getVM('hv gen1')).firmware).toBe('bios');
    await e.close();
  });
});
