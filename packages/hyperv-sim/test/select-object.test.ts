import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createVhd } from '@replikit/formats';
import type { PowerShell } from 'node-powershell';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedHost, type SimulatedHyperVHost } from '../src/index.js';
import { callLine, simShell } from './helpers/sim-shell.js';

const MIB = 2 ** 20;

let dir: string;
let host: SimulatedHyperVHost;
let shell: PowerShell;
let call: ReturnType<typeof simShell>['call'];

/** The whole envelope of a call (ok or not). */
async function envelope(body: string, params: Record<string, unknown>) {
  const result = await shell.invoke(callLine(body, params));
  return JSON.parse(result.raw) as { ok: boolean; data?: Record<string, unknown>[]; message?: string };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperv-select-'));
  host = await createSimulatedHost(dir);
  ({ shell, call } = simShell(host.pwsh));
  await call('New-VHD -Path $p.path -SizeBytes $p.size -Dynamic -BlockSizeBytes $p.block', {
    path: join(host.root, 'vms', 'app.vhdx'),
    size: 8 * MIB,
    block: MIB,
  });
  await call('New-VM -Name $p.name -Generation 2 -VHDPath $p.path', {
    name: 'app',
    path: join(host.root, 'vms', 'app.vhdx'),
  });
});

afterAll(async () => {
  await shell.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('Select-Object on the simulated host', () => {
  it('projects to the listed properties: enums as numbers unless .ToString(), names matched case-insensitively', async () => {
    const [vm] = await call(
      "Get-VM -Name $p.name | Select-Object -Property 'name', 'State', @{ Name = 'Text'; Expression = { $_.State.ToString() } }, @{ n = 'Gen'; e = { $_.Generation } }",
      { name: 'app' },
    );
    expect(vm).toEqual({ name: 'app', State: 3, Text: 'Off', Gen: 2 });
  });

  it('refuses a property the documented type does not have, and one it has that the simulator does not model', async () => {
    const typo = await envelope("Get-VM -Name $p.name | Select-Object -Property 'Nmae'", { name: 'app' });
    expect(typo).toMatchObject({ ok: false });
    expect(typo.message).toContain("'Nmae' cannot be found on type Microsoft.HyperV.PowerShell.VirtualMachine");
    const unmodelled = await envelope("Get-VM -Name $p.name | Select-Object -Property 'Uptime'", { name: 'app' });
    expect(unmodelled.message).toContain("does not model property 'Uptime'");
  });

  it('raises the null-valued method call error for .ToString() of a null property, as PowerShell does', async () => {
    const answer = await envelope(
      "Get-VHD -Path $p.path | Select-Object -Property @{ Name = 'Parent'; Expression = { $_.ParentPath.ToString() } }",
      { path: join(host.root, 'vms', 'app.vhdx') },
    );
    expect(answer).toMatchObject({ ok: false });
    expect(answer.message).toContain('null-valued expression');
  });

  it('refuses an expression form it does not evaluate rather than guessing', async () => {
    const answer = await envelope(
      "Get-VM -Name $p.name | Select-Object -Property @{ Name = 'X'; Expression = { $_.Name + 'x' } }",
      { name: 'app' },
    );
    expect(answer).toMatchObject({ ok: false });
    expect(answer.message).toContain('does not evaluate the calculated property expression');
  });

  it('reports a VHD v1 disk as VhdFormat VHD with 512-byte sectors, and the fields Get-VHD documents', async () => {
    const path = join(host.root, 'vms', 'old.vhd');
    await (await createVhd(path, { size: 4 * MIB })).close();
    const [vhd] = await call(
      "Get-VHD -Path $p.path | Select-Object -Property @{ Name = 'VhdFormat'; Expression = { $_.VhdFormat.ToString() } }, @{ Name = 'VhdType'; Expression = { $_.VhdType.ToString() } }, 'Size', 'MinimumSize', 'Attached', 'ParentPath', 'BlockSize', 'LogicalSectorSize', 'PhysicalSectorSize'",
      { path },
    );
    expect(vhd).toEqual({
      VhdFormat: 'VHD',
      VhdType: 'Dynamic',
      Size: 4 * MIB,
      MinimumSize: null,
      Attached: false,
      ParentPath: null,
      BlockSize: 2 * MIB,
      LogicalSectorSize: 512,
      PhysicalSectorSize: 512,
    });
    const [vhdx] = await call("Get-VHD -Path $p.path | Select-Object -Property 'VhdFormat', 'BlockSize'", {
      path: join(host.root, 'vms', 'app.vhdx'),
    });
    expect(vhdx).toEqual({ VhdFormat: 3, BlockSize: MIB });
  });
});
