import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openVhdx } from '@replikit/formats';
import type { PowerShell } from 'node-powershell';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedHost, type SimulatedHyperVHost } from '../src/index.js';
import { simShell } from './helpers/sim-shell.js';

const MIB = 2 ** 20;

let dir: string;
let host: SimulatedHyperVHost;
let shell: PowerShell;
let call: ReturnType<typeof simShell>['call'];

async function readFile(path: string, offset: number, length: number): Promise<Uint8Array> {
  const reader = await openVhdx(path);
  try {
    return await reader.read(offset, length);
  } finally {
    await reader.close();
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperv-cp-'));
  host = await createSimulatedHost(dir);
  ({ shell, call } = simShell(host.pwsh));
  const disk = join(host.root, 'vms', 'db.vhdx');
  await call('New-VHD -Path $p.path -SizeBytes $p.size -Dynamic -BlockSizeBytes $p.block', {
    path: disk,
    size: 8 * MIB,
    block: MIB,
  });
  await call('New-VM -Name $p.name -Generation 2 -VHDPath $p.path', { name: 'db', path: disk });
});

afterAll(async () => {
  await shell.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('checkpoints on the simulated host', () => {
  it('freezes the chain in .avhdx differencing files that replikit reads; guest writes go on top', async () => {
    await host.guestWrite('db', 0, 0, new Uint8Array(4096).fill(1));
    await call('Checkpoint-VM -Name $p.name -SnapshotName $p.snap', { name: 'db', snap: 'cp1' });
    const [drive] = await call('Get-VMHardDiskDrive -VMName $p.name', { name: 'db' });
    expect(String(drive?.Path)).toMatch(/\.avhdx$/);
    const [snap] = await call('Get-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'db', snap: 'cp1' });
    const frozen = (snap?.HardDrives as { Path: string }[] | undefined)?.[0]?.Path as string;
    await host.guestWrite('db', 0, 0, new Uint8Array(4096).fill(2));
    await host.guestWrite('db', 0, 3 * MIB, new Uint8Array(512).fill(3));
    expect(await readFile(frozen, 0, 4096)).toEqual(new Uint8Array(4096).fill(1));
    expect(await readFile(String(drive?.Path), 0, 4096)).toEqual(new Uint8Array(4096).fill(2));
    // Without a projection ConvertTo-Json writes the VhdType enum as its number (Differencing = 4).
    const vhd = await call('Get-VHD -Path $p.path', { path: drive?.Path });
    expect(vhd[0]).toMatchObject({ VhdType: 4, ParentPath: frozen });
  });

  it('merges the newest checkpoint on removal and keeps the guest content', async () => {
    await call('Remove-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'db', snap: 'cp1' });
    const [drive] = await call('Get-VMHardDiskDrive -VMName $p.name', { name: 'db' });
    expect(String(drive?.Path)).toMatch(/db\.vhdx$/);
    expect(await host.guestRead('db', 0, 0, 4096)).toEqual(new Uint8Array(4096).fill(2));
    expect(await host.guestRead('db', 0, 3 * MIB, 512)).toEqual(new Uint8Array(512).fill(3));
    expect((await readdir(join(host.root, 'vms'))).filter((f) => f.endsWith('.avhdx'))).toEqual([]);
    // The merged file was rewritten by the simulator; qemu-img (which reads non-differencing VHDX) accepts it.
    await promisify(execFile)('qemu-img', ['check', '-f', 'vhdx', String(drive?.Path)]);
  });

  it('discards later writes when a checkpoint is applied', async () => {
    await call('Checkpoint-VM -Name $p.name -SnapshotName $p.snap', { name: 'db', snap: 'cp2' });
    await host.guestWrite('db', 0, 0, new Uint8Array(4096).fill(9));
    await call('Restore-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'db', snap: 'cp2' });
    expect(await host.guestRead('db', 0, 0, 4096)).toEqual(new Uint8Array(4096).fill(2));
  });

  it('removes a checkpoint that is not the newest: the later ones keep their content, the chain stays whole', async () => {
    await call('Remove-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'db', snap: 'cp2' });
    const fill = (v: number) => new Uint8Array(4096).fill(v);
    await host.guestWrite('db', 0, 0, fill(4));
    await call('Checkpoint-VM -Name $p.name -SnapshotName $p.snap', { name: 'db', snap: 'a' });
    await host.guestWrite('db', 0, MIB, fill(5));
    await call('Checkpoint-VM -Name $p.name -SnapshotName $p.snap', { name: 'db', snap: 'b' });
    await host.guestWrite('db', 0, 2 * MIB, fill(6));
    await call('Checkpoint-VM -Name $p.name -SnapshotName $p.snap', { name: 'db', snap: 'c' });
    await host.guestWrite('db', 0, 0, fill(7));
    await call('Remove-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'db', snap: 'a' });
    await call('Rename-VMSnapshot -VMName $p.name -Name $p.snap -NewName $p.to', { name: 'db', snap: 'b', to: 'b2' });
    const frozenOf = async (snap: string) => {
      const [s] = await call('Get-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'db', snap });
      return ((s?.HardDrives ?? []) as { Path: string }[])[0]?.Path as string;
    };
    const b = await frozenOf('b2');
    expect([await readFile(b, 0, 4096), await readFile(b, MIB, 4096), await readFile(b, 2 * MIB, 4096)]).toEqual([
      fill(4),
      fill(5),
      new Uint8Array(4096),
    ]);
    const c = await frozenOf('c');
    expect([await readFile(c, 0, 4096), await readFile(c, 2 * MIB, 4096)]).toEqual([fill(4), fill(6)]);
    expect(await host.guestRead('db', 0, 0, 4096)).toEqual(fill(7));
    for (const snap of ['c', 'b2']) await call('Remove-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'db', snap });
    expect(await host.guestRead('db', 0, 2 * MIB, 4096)).toEqual(fill(6));
    expect((await readdir(join(host.root, 'vms'))).filter((f) => f.endsWith('.avhdx'))).toEqual([]);
  });
});

describe('checkpoint merges across block sizes', () => {
  it('keeps data the frozen file holds beyond the child file’s block count (1 MiB base blocks, 2 MiB child blocks)', async () => {
    const disk = join(host.root, 'vms', 'small-blocks.vhdx');
    await call('New-VHD -Path $p.path -SizeBytes $p.size -Dynamic -BlockSizeBytes $p.block', {
      path: disk,
      size: 6 * MIB + 5000,
      block: MIB,
    });
    await call('New-VM -Name $p.name -Generation 2 -VHDPath $p.path', { name: 'sb', path: disk });
    await host.guestWrite('sb', 0, 5 * MIB, new Uint8Array(4096).fill(8));
    await host.guestWrite('sb', 0, 6 * MIB, new Uint8Array(5000).fill(9));
    await call('Checkpoint-VM -Name $p.name -SnapshotName $p.snap', { name: 'sb', snap: 'x' });
    await host.guestWrite('sb', 0, 0, new Uint8Array(512).fill(1));
    await call('Remove-VMSnapshot -VMName $p.name -Name $p.snap', { name: 'sb', snap: 'x' });
    expect(await host.guestRead('sb', 0, 5 * MIB, 4096)).toEqual(new Uint8Array(4096).fill(8));
    expect(await host.guestRead('sb', 0, 6 * MIB, 5000)).toEqual(new Uint8Array(5000).fill(9));
    expect(await host.guestRead('sb', 0, 0, 512)).toEqual(new Uint8Array(512).fill(1));
  });
});

describe('a removed VM on the simulated host', () => {
  it('takes its checkpoints with it: a new VM of the same name has none', async () => {
    await call('New-VM -Name $p.name -Generation 2 -NoVHD', { name: 'gone' });
    await call('Checkpoint-VM -Name $p.name -SnapshotName $p.snap', { name: 'gone', snap: 'old' });
    await call('Remove-VM -Name $p.name -Force', { name: 'gone' });
    await call('New-VM -Name $p.name -Generation 2 -NoVHD', { name: 'gone' });
    expect(await call('Get-VMSnapshot -VMName $p.name', { name: 'gone' })).toEqual([]);
  });
});

describe('network adapters on the simulated host', () => {
  it('adds an adapter with a static MAC on a switch, and removes one by name', async () => {
    await call('New-VM -Name $p.name -Generation 2 -NoVHD', { name: 'nics' });
    await call('Remove-VMNetworkAdapter -VMName $p.name -Name $p.nic', { name: 'nics', nic: 'Network Adapter' });
    await call('Add-VMNetworkAdapter -VMName $p.name -Name $p.nic -StaticMacAddress $p.mac -SwitchName $p.switch', {
      name: 'nics',
      nic: 'lan',
      mac: '00-15-5D-01-02-03',
      switch: 'LAN',
    });
    await call('Add-VMNetworkAdapter -VMName $p.name -Name $p.nic', { name: 'nics', nic: 'spare' });
    const nics = await call(
      "Get-VMNetworkAdapter -VMName $p.name | Select-Object -Property 'VMName', 'Name', 'MacAddress', 'SwitchName'",
      { name: 'nics' },
    );
    expect(nics).toEqual([
      { VMName: 'nics', Name: 'lan', MacAddress: '00155D010203', SwitchName: 'LAN' },
      { VMName: 'nics', Name: 'spare', MacAddress: expect.stringMatching(/^00155D[0-9A-F]{6}$/), SwitchName: null },
    ]);
  });
});
