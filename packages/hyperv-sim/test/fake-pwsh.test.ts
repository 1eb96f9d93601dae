import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PowerShell } from 'node-powershell';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSimulatedHost, type SimulatedHyperVHost } from '../src/index.js';

/** A call line as a driver sends it: the script and its parameters as base64. */
function callLine(script: string, params: Record<string, unknown>): string {
  const s = Buffer.from(script, 'utf8').toString('base64');
  const p = Buffer.from(JSON.stringify(params), 'utf8').toString('base64');
  return `& ([scriptblock]::Create([Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('${s}')))) '${p}'`;
}

/** Wraps a body in the envelope every call uses. */
function enveloped(body: string): string {
  return [
    "$ErrorActionPreference = 'Stop'",
    '$p = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($args[0])) | ConvertFrom-Json',
    'try {',
    `  $r = @(${body})`,
    '  [pscustomobject]@{ ok = $true; data = $r } | ConvertTo-Json -Depth 8 -Compress',
    '} catch {',
    '  [pscustomobject]@{ ok = $false; category = $_.CategoryInfo.Category.ToString(); message = $_.Exception.Message; errorId = $_.FullyQualifiedErrorId } | ConvertTo-Json -Depth 8 -Compress',
    '}',
  ].join('\n');
}

let dir: string;
let host: SimulatedHyperVHost;
let shell: PowerShell;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperv-sim-'));
  host = await createSimulatedHost(dir);
  shell = new PowerShell({ executable: host.pwsh, throwOnInvocationError: false });
});

afterEach(async () => {
  await shell.dispose();
  await rm(dir, { recursive: true, force: true });
});

async function call(body: string, params: Record<string, unknown>) {
  const result = await shell.invoke(callLine(enveloped(body), params));
  return { hadErrors: result.hadErrors, raw: result.raw, json: result.hadErrors ? undefined : JSON.parse(result.raw) };
}

describe('the fake pwsh, spawned by node-powershell', () => {
  it('creates a VM and a VHDX, attaches it, and reports them', async () => {
    const disk = join(host.root, 'disks', 'web.vhdx');
    const vhd = await call('New-VHD -Path $p.path -SizeBytes $p.size -Dynamic -BlockSizeBytes $p.block', {
      path: disk,
      size: 8 * 2 ** 20,
      block: 2 ** 20,
    });
    expect(vhd.json).toMatchObject({
      ok: true,
      // Enums unprojected are numbers, as ConvertTo-Json writes them: VHDX = 3, Dynamic = 3.
      data: [{ Path: disk, VhdFormat: 3, VhdType: 3, Size: 8 * 2 ** 20 }],
    });
    const vm = await call('New-VM -Name $p.name -Generation 2 -MemoryStartupBytes $p.memory -NoVHD', {
      name: 'web',
      memory: 2 ** 30,
    });
    expect(vm.json).toMatchObject({
      ok: true,
      data: [{ Name: 'web', Generation: 2, State: 3, MemoryStartup: 2 ** 30 }],
    });
    await call('Add-VMHardDiskDrive -VMName $p.name -ControllerType SCSI -Path $p.path', { name: 'web', path: disk });
    const drives = await call(
      "Get-VMHardDiskDrive -VMName $p.name | Select-Object -Property 'Path', 'ControllerType'",
      { name: 'web' },
    );
    // Only the selected properties come back, and the ControllerType enum as its number (SCSI = 1).
    expect(drives.json).toEqual({ ok: true, data: [{ Path: disk, ControllerType: 1 }] });
  });

  it('answers a missing VM with the Hyper-V error in the envelope', async () => {
    const r = await call('Get-VM -Name $p.name', { name: 'nope' });
    expect(r.json).toMatchObject({ ok: false, category: 'InvalidArgument' });
    expect(r.json.message).toContain('unable to find a virtual machine with name "nope"');
  });

  it('refuses a misspelled cmdlet and a misspelled parameter, as PowerShell does', async () => {
    const cmdlet = await call('Get-VMM -Name $p.name', { name: 'x' });
    expect(cmdlet.json).toMatchObject({ ok: false, category: 'ObjectNotFound', errorId: 'CommandNotFoundException' });
    const parameter = await call('Get-VM -Nmae $p.name', { name: 'x' });
    expect(parameter.json).toMatchObject({ ok: false, category: 'InvalidArgument' });
    expect(parameter.json.message).toContain("'Nmae'");
  });

  it('refuses a script that does not parse, on stderr', async () => {
    const r = await call('Get-VM -Name (', {});
    expect(r.hadErrors).toBe(true);
    expect(r.raw).toMatch(/^ParserError: At line:\d+ char:\d+/);
    const next = await call('Get-VM', {});
    expect(next.json).toEqual({ ok: true, data: [] });
  });

  it('logs every line and decoded script it receives', async () => {
    await call('Get-VM -Name $p.name', { name: 'logged' });
    const log = await host.scriptLog();
    expect(log.some((e) => e.kind === 'script' && e.text.includes('Get-VM -Name $p.name'))).toBe(true);
    expect(log.some((e) => e.text.includes('logged'))).toBe(false);
  });
});
