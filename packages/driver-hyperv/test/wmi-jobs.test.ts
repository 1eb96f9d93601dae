import { randomFillSync } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, defineDriver, FileStateStore, ReplicationEngine } from '@replikit/core';
import { compareBytes, readWholeDisk } from '@replikit/core/testing';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createHyperVDriver,
  HYPERV_KIND_CAPABILITIES,
  HyperVDriver,
  hypervDriverOptionsSchema,
  type PowerShellLink,
  type PsScript,
} from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;
const NS = "'root\\virtualization\\v2'";

// What the driver sent before this fix: the VM's name, a checkpoint id and an InstanceID as
// strings where Microsoft documents CIM references (CIM_ComputerSystem REF AffectedSystem, …).
const STRING_ARGUMENT_SCRIPTS: PsScript[] = [
  {
    name: 'old-create-recovery-checkpoint',
    body: [
      `$svc = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSnapshotService'`,
      "Invoke-CimMethod -InputObject $svc -MethodName 'CreateSnapshot' -Arguments @{ AffectedSystem = $p.vm; SnapshotType = [uint16]32768 }",
    ].join('\n'),
  },
  {
    name: 'old-destroy-reference-point',
    body: [
      `$rps = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemReferencePointService'`,
      "Invoke-CimMethod -InputObject $rps -MethodName 'DestroyReferencePoint' -Arguments @{ AffectedReferencePoint = $p.point }",
    ].join('\n'),
  },
];

interface JobsFile {
  jobs: { method: string; jobState: number }[];
}

async function hostJobs(sim: SimHost): Promise<JobsFile['jobs']> {
  try {
    return (JSON.parse(await readFile(join(sim.host.root, 'wmi-jobs.json'), 'utf8')) as JobsFile).jobs;
  } catch {
    return [];
  }
}

/** The link, with `onCall` told the name of each script before it is sent. */
function watched(link: PowerShellLink, onCall: (name: string) => void): PowerShellLink {
  return new Proxy(link, {
    get(target, key) {
      if (key !== 'call') return Reflect.get(target, key);
      return (script: PsScript, params?: Record<string, unknown>, options?: { timeoutMs?: number }) => {
        onCall(script.name);
        return target.call(script, params, options);
      };
    },
  });
}

describe('WMI methods take CIM references and may run as jobs', { timeout: 300_000 }, () => {
  let sim: SimHost;
  let dir: string;
  beforeEach(async () => {
    sim = await startSimHost();
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-wmi-'));
  });
  afterEach(async () => {
    await sim.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a string where the method documents a reference, as a real host does', async () => {
    await sim.makeVM('strings', [4 * MiB]);
    for (const script of STRING_ARGUMENT_SCRIPTS) {
      await expect(sim.link.call(script, { vm: 'strings', point: 'Microsoft:0000' })).rejects.toMatchObject({
        code: 'E_DRIVER',
        message: expect.stringMatching(/\(InvalidType\): Type mismatch for parameter "Affected\w+"/),
      });
    }
  });

  it('takes, converts and destroys through methods that complete at once (ReturnValue 0)', async () => {
    await sim.makeVM('direct', [4 * MiB]);
    const driver = new HyperVDriver({ link: sim.link, sharedLink: true });
    const vm = await driver.getVM('direct');
    const snapshot = await driver.snapshot(vm.id, 'replikit-direct-1');
    expect((await sim.host.state()).snapshots?.map((s) => s.snapshotType)).toEqual(['Recovery']);
    await driver.deleteSnapshot(snapshot, { keepMetadata: true });
    expect((await sim.host.state()).snapshots ?? []).toEqual([]);
    const rct = JSON.parse(await readFile(join(sim.host.root, 'rct.json'), 'utf8')) as { referencePoints: unknown[] };
    expect(rct.referencePoints).toHaveLength(1);
    await driver.deleteSnapshot(snapshot);
    const after = JSON.parse(await readFile(join(sim.host.root, 'rct.json'), 'utf8')) as { referencePoints: unknown[] };
    expect(after.referencePoints).toHaveLength(0);
    expect(await hostJobs(sim)).toEqual([]);
  });

  it('waits on the jobs of a full and an RCT incremental run and reaches their results (ReturnValue 4096)', async () => {
    const size = 16 * MiB;
    await sim.makeVM('jobs', [size]);
    await sim.host.armFaults({ wmiJobs: { polls: 2 } });
    await sim.host.guestWrites('jobs', 0, [{ offset: 0, data: randomFillSync(new Uint8Array(2 * MiB)) }]);
    const drivers = new DriverRegistry()
      .register(
        defineDriver({
          kind: 'hyperv',
          capabilities: HYPERV_KIND_CAPABILITIES,
          options: hypervDriverOptionsSchema,
          create: (options) => createHyperVDriver(options, { openImage: (path) => sim.host.openDisk(path) }),
        }),
      )
      .register(fileDriver);
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      transport: localTransport(),
    });
    const job = {
      name: 'wmi-jobs',
      source: { driver: 'hyperv', vm: 'jobs', pwsh: sim.host.pwsh },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
      blockSize: 64 * 1024,
    };
    const target = createFileDriver({ root: join(dir, 'replicas') });
    try {
      const first = await engine.run(job);
      expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
      await sim.host.guestWrites('jobs', 0, [
        { offset: 5 * MiB + 512, data: randomFillSync(new Uint8Array(8192)) },
        { offset: 11 * MiB, data: randomFillSync(new Uint8Array(4096)) },
      ]);
      const second = await engine.run(job);
      expect(second.outcome, JSON.stringify(second.error)).toBe('completed');
      expect(second.disks.map((d) => d.mode)).toEqual(['tracked']);

      // Every CreateSnapshot and ConvertToReferencePoint ran as a job that the driver saw through.
      const jobs = await hostJobs(sim);
      expect(jobs.filter((j) => j.method === 'CreateSnapshot').length).toBeGreaterThanOrEqual(2);
      expect(jobs.filter((j) => j.method === 'ConvertToReferencePoint').length).toBeGreaterThanOrEqual(1);
      expect(jobs.every((j) => j.jobState === 7)).toBe(true);
      const scripts = (await sim.host.scriptLog()).filter((e) => e.kind === 'script').map((e) => e.text);
      expect(scripts.some((t) => t.includes('Get-CimAssociatedInstance'))).toBe(true);

      const reader = await sim.driver();
      const replica = (await target.listVMs())[0]!;
      expect(
        compareBytes(
          await readWholeDisk(target, replica.disks[0]!),
          await readWholeDisk(reader, second.snapshot!.disks[0]!),
        ),
      ).toBe('equal');
    } finally {
      await engine.close();
      await target.close();
    }
  });

  it('fails with a DriverError naming the method, the job state, the code and the description when the job fails', async () => {
    await sim.makeVM('failing', [4 * MiB]);
    await sim.host.armFaults({
      wmiJobs: {
        polls: 1,
        methods: ['CreateSnapshot'],
        fail: { jobState: 10, errorCode: 32768, errorDescription: 'The disk has no free space left.' },
      },
    });
    const driver = new HyperVDriver({ link: sim.link, sharedLink: true });
    const vm = await driver.getVM('failing');
    await expect(driver.snapshot(vm.id, 'replikit-failing-1')).rejects.toMatchObject({
      code: 'E_DRIVER',
      message: expect.stringMatching(
        /CreateSnapshot failed: its WMI job \S+ ended Exception \(JobState 10\) with ErrorCode 32768: The disk has no free space left\./,
      ),
    });
    expect((await sim.host.state()).snapshots ?? []).toEqual([]);
  });

  it('stops waiting on a job when the operation is cancelled', async () => {
    await sim.makeVM('cancelled', [4 * MiB]);
    await sim.host.armFaults({ wmiJobs: { polls: 1_000_000 } });
    const abort = new AbortController();
    const link = watched(sim.link, (name) => {
      if (name === 'wmi-job-state') abort.abort();
    });
    const driver = new HyperVDriver({ link, sharedLink: true });
    const vm = await driver.getVM('cancelled');
    await expect(driver.snapshot(vm.id, 'replikit-cancelled-1', { signal: abort.signal })).rejects.toMatchObject({
      code: 'E_ABORTED',
    });
  });
});
