import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PowerShell } from 'node-powershell';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedHost, type SimulatedHyperVHost } from '../src/index.js';
import { simShell } from './helpers/sim-shell.js';

const MIB = 2 ** 20;
const SIZE = 40 * MIB;

const NS = "'root\\virtualization\\v2'";
const CREATE_RECOVERY = [
  `$svc = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSnapshotService'`,
  `$vm = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ComputerSystem' | Where-Object { $_.ElementName -eq $p.vm }`,
  "Invoke-CimMethod -InputObject $svc -MethodName 'CreateSnapshot' -Arguments @{ AffectedSystem = $vm; SnapshotType = [uint16]32768 } | Select-Object -Property 'ReturnValue', @{ Name = 'Snapshot'; Expression = { $_.ResultingSnapshot.InstanceID } }",
].join('\n');
const CONVERT = [
  `$svc = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSnapshotService'`,
  `$snap = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSettingData' | Where-Object { $_.InstanceID -eq $p.snapshot }`,
  "Invoke-CimMethod -InputObject $svc -MethodName 'ConvertToReferencePoint' -Arguments @{ AffectedSnapshot = $snap } | Select-Object -Property 'ReturnValue', @{ Name = 'Point'; Expression = { $_.ResultingReferencePoint.InstanceID } }",
].join('\n');
const POINTS = `Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemReferencePoint' | Select-Object -Property 'InstanceID', 'ResilientChangeTrackingIdentifiers'`;
const CHECKPOINTS =
  "Get-VMSnapshot -VMName $p.vm | Select-Object -Property @{ Name = 'Id'; Expression = { $_.Id.ToString() } }, @{ Name = 'HardDrives'; Expression = { @($_.HardDrives | Select-Object -Property 'Path') } }";
const CHANGES = [
  "$ims = Get-CimInstance -Namespace 'root\\virtualization\\v2' -ClassName 'Msvm_ImageManagementService'",
  "Invoke-CimMethod -InputObject $ims -MethodName 'GetVirtualDiskChanges' -Arguments @{ Path = $p.path; LimitId = $p.limitId; ByteOffset = [uint64]$p.offset; ByteLength = [uint64]$p.length } | Select-Object -Property 'ReturnValue', 'ProcessedByteLength', 'ChangedByteOffsets', 'ChangedByteLengths'",
].join('\n');
const DESTROY = [
  `$rps = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemReferencePointService'`,
  `$point = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemReferencePoint' | Where-Object { $_.InstanceID -eq $p.point }`,
  "Invoke-CimMethod -InputObject $rps -MethodName 'DestroyReferencePoint' -Arguments @{ AffectedReferencePoint = $point } | Select-Object -Property 'ReturnValue'",
].join('\n');

let dir: string;
let host: SimulatedHyperVHost;
let shell: PowerShell;
let call: ReturnType<typeof simShell>['call'];

/** Asks for the changes of `path` since `limitId` over the whole disk, looping on the processed length. */
async function allChanges(path: string, limitId: string) {
  const ranges: [number, number][] = [];
  let calls = 0;
  for (let offset = 0; offset < SIZE; ) {
    const [r] = await call(CHANGES, { path, limitId, offset, length: SIZE - offset });
    calls++;
    if (r?.ReturnValue !== 0) return { returnValue: r?.ReturnValue, ranges, calls };
    const offsets = r.ChangedByteOffsets as number[];
    const lengths = r.ChangedByteLengths as number[];
    for (const [i, o] of offsets.entries()) ranges.push([o, lengths[i] as number]);
    offset += r.ProcessedByteLength as number;
  }
  return { returnValue: 0, ranges, calls };
}

/** What the guest wrote before the second checkpoint, at the changed ranges. */
async function expectedAt(offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  if (offset === 5 * MIB) {
    out.fill(1);
    out.fill(2, 4096, 4096 + 8192);
  } else out.fill(3);
  return out;
}

/** A recovery checkpoint of `app` (its settings' InstanceID, `Microsoft:<id>`) and the file it froze. */
async function recoveryCheckpoint() {
  const [made] = await call(CREATE_RECOVERY, { vm: 'app' });
  expect(made?.ReturnValue).toBe(0);
  const instance = made?.Snapshot as string;
  const list = await call(CHECKPOINTS, { vm: 'app' });
  const found = list.find((c) => `Microsoft:${c.Id}`.toLowerCase() === instance.toLowerCase());
  const drives = found?.HardDrives as { Path: string }[];
  return { id: instance, frozen: drives[0]?.Path as string };
}

async function referencePoint(snapshot: string) {
  const [done] = await call(CONVERT, { snapshot });
  expect(done?.ReturnValue).toBe(0);
  const points = await call(POINTS);
  return points.find((p) => p.InstanceID === done?.Point) as {
    InstanceID: string;
    ResilientChangeTrackingIdentifiers: string[];
  };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperv-rct-'));
  host = await createSimulatedHost(dir);
  ({ shell, call } = simShell(host.pwsh));
  const disk = join(host.root, 'vms', 'app.vhdx');
  await call('New-VHD -Path $p.path -SizeBytes $p.size -Dynamic -BlockSizeBytes $p.block', {
    path: disk,
    size: SIZE,
    block: MIB,
  });
  await call('New-VM -Name $p.name -Generation 2 -VHDPath $p.path', { name: 'app', path: disk });
  await host.guestWrite('app', 0, 0, new Uint8Array(MIB).fill(7));
});

afterAll(async () => {
  await shell.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('RCT on the simulated host', () => {
  it('reports exactly the writes between two reference points, in chunks the caller loops over', async () => {
    const first = await recoveryCheckpoint();
    const base = await referencePoint(first.id);
    const [rct0] = base.ResilientChangeTrackingIdentifiers;
    await host.guestWrite('app', 0, 5 * MIB, new Uint8Array(MIB).fill(1));
    await host.guestWrite('app', 0, 5 * MIB + 4096, new Uint8Array(8192).fill(2));
    await host.guestWrite('app', 0, 33 * MIB, new Uint8Array(512).fill(3));
    const second = await recoveryCheckpoint();
    await host.guestWrite('app', 0, 20 * MIB, new Uint8Array(512).fill(4)); // after the checkpoint
    const changes = await allChanges(second.frozen, rct0 as string);
    expect(changes.returnValue).toBe(0);
    expect(changes.calls).toBeGreaterThan(1);
    expect(changes.ranges).toEqual([
      [5 * MIB, MIB],
      [33 * MIB, 512],
    ]);
    expect(await allChanges(second.frozen, 'rctX:not-a-real-id:00000001')).toMatchObject({ returnValue: 32773 });

    // Reading just those ranges of the frozen file: the host counts what was fetched.
    const reader = await host.openDisk(second.frozen);
    try {
      for (const [offset, length] of changes.ranges) {
        expect(await reader.read(offset, length)).toEqual(await expectedAt(offset, length));
      }
    } finally {
      await reader.close();
    }
    const changed = MIB + 512;
    const fetched = host.bytesRead().get(second.frozen) ?? 0;
    expect(fetched).toBeGreaterThanOrEqual(changed);
    expect(fetched).toBeLessThan(changed + 2 * MIB); // headers, metadata and BAT, not the 40 MiB disk

    const next = await referencePoint(second.id);
    expect((await host.state()).snapshots ?? []).toEqual([]);
    await call(DESTROY, { point: base.InstanceID });
    const live = (await host.state()).vms[0]?.drives[0]?.path as string;
    expect(await allChanges(live, rct0 as string)).toMatchObject({ returnValue: 32773 });
    const since = await allChanges(live, next.ResilientChangeTrackingIdentifiers[0] as string);
    expect(since.ranges).toEqual([[20 * MIB, 512]]);
  });
});
