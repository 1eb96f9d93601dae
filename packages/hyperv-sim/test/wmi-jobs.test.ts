import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PowerShell } from 'node-powershell';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedHost, type SimulatedHyperVHost } from '../src/index.js';
import { simShell } from './helpers/sim-shell.js';

const NS = "'root\\virtualization\\v2'";
const CREATE = [
  `$svc = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSnapshotService'`,
  `$vm = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ComputerSystem' | Where-Object { $_.ElementName -eq $p.vm }`,
  "Invoke-CimMethod -InputObject $svc -MethodName 'CreateSnapshot' -Arguments @{ AffectedSystem = $vm; SnapshotType = [uint16]32768 } | Select-Object -Property 'ReturnValue', @{ Name = 'Job'; Expression = { $_.Job.InstanceID } }, @{ Name = 'Snapshot'; Expression = { $_.ResultingSnapshot.InstanceID } }",
].join('\n');
const JOB = `Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ConcreteJob' | Where-Object { $_.InstanceID -eq $p.job } | Select-Object -Property 'JobState', 'ErrorCode', 'ErrorDescription'`;
const RESULT = [
  `$job = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ConcreteJob' | Where-Object { $_.InstanceID -eq $p.job }`,
  "Get-CimAssociatedInstance -InputObject $job -Association 'Msvm_AffectedJobElement' -ResultClassName 'Msvm_VirtualSystemSettingData' | Select-Object -Property 'InstanceID', 'VirtualSystemType'",
].join('\n');

let dir: string;
let host: SimulatedHyperVHost;
let shell: PowerShell;
let call: ReturnType<typeof simShell>['call'];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperv-wmi-jobs-'));
  host = await createSimulatedHost(dir);
  ({ shell, call } = simShell(host.pwsh));
  const disk = join(host.root, 'vms', 'app.vhdx');
  await call('New-VHD -Path $p.path -SizeBytes $p.size -Dynamic', { path: disk, size: 8 * 2 ** 20 });
  await call('New-VM -Name $p.name -Generation 2 -VHDPath $p.path', { name: 'app', path: disk });
}, 120_000);

afterAll(async () => {
  await shell.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('WMI jobs on the simulated host', () => {
  it('completes at once by default, the result a reference holding its key', async () => {
    await host.armFaults({});
    const [made] = await call(CREATE, { vm: 'app' });
    expect(made).toMatchObject({
      ReturnValue: 0,
      Job: null,
      Snapshot: expect.stringMatching(/^Microsoft:[0-9A-F-]{36}$/),
    });
  });

  it('answers 4096 when armed: the job runs for the set number of reads, then its result is associated', async () => {
    await host.armFaults({ wmiJobs: { polls: 2 } });
    const [made] = await call(CREATE, { vm: 'app' });
    expect(made).toMatchObject({ ReturnValue: 4096, Snapshot: null });
    const job = made?.Job as string;
    const states = [];
    for (let i = 0; i < 3; i++) states.push((await call(JOB, { job }))[0]?.JobState);
    expect(states).toEqual([4, 4, 7]);
    const [made2] = await call(RESULT, { job });
    expect(made2).toMatchObject({ VirtualSystemType: 'Microsoft:Hyper-V:Snapshot:Recovery' });
    expect(
      (await host.state()).snapshots?.some(
        (s) => `Microsoft:${s.id}`.toLowerCase() === String(made2?.InstanceID).toLowerCase(),
      ),
    ).toBe(true);
  });

  it('ends an armed failing job with its state, code and description, and does not do the work', async () => {
    const before = (await host.state()).snapshots?.length ?? 0;
    await host.armFaults({
      wmiJobs: { polls: 0, fail: { jobState: 9, errorCode: 32775, errorDescription: 'Killed.' } },
    });
    const [made] = await call(CREATE, { vm: 'app' });
    const [state] = await call(JOB, { job: made?.Job });
    expect(state).toEqual({ JobState: 9, ErrorCode: 32775, ErrorDescription: 'Killed.' });
    expect(await call(RESULT, { job: made?.Job })).toEqual([]);
    expect((await host.state()).snapshots?.length ?? 0).toBe(before);
  });

  it('refuses a Where-Object filter it does not carry out', async () => {
    await expect(
      call(
        `Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ComputerSystem' | Where-Object { $_.ElementName -like $p.vm }`,
        {
          vm: 'a*',
        },
      ),
    ).rejects.toThrow(/carries out only Where-Object/);
  });
});
