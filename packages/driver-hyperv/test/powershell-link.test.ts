import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isReplikitError } from '@replikit/core';
import { createSimulatedHost, type SimulatedHyperVHost } from '@replikit/hyperv-sim';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PowerShellLink, type PsScript } from '../src/index.js';

const NEW_VM: PsScript = {
  name: 'new-vm',
  body: "New-VM -Name $p.name -Generation $p.generation -MemoryStartupBytes $p.memory -NoVHD | Select-Object -Property 'Name', 'Id'",
};
const GET_VM: PsScript = { name: 'get-vm', body: "Get-VM -Name $p.name | Select-Object -Property 'Name', 'Notes'" };
const SET_NOTES: PsScript = { name: 'set-notes', body: 'Set-VM -Name $p.name -Notes $p.notes' };
const LIST_VMS: PsScript = { name: 'list-vms', body: "Get-VM | Select-Object -Property 'Name'" };

let dir: string;
let host: SimulatedHyperVHost;
let link: PowerShellLink;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ps-link-'));
  host = await createSimulatedHost(dir);
  link = new PowerShellLink({ executable: host.pwsh, timeoutMs: 50_000 });
});

afterEach(async () => {
  await link.close();
  await rm(dir, { recursive: true, force: true });
});

async function driverError(promise: Promise<unknown>) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isReplikitError(error)).toBe(true);
  return error as Error & { code: string; details?: Record<string, unknown> };
}

describe('PowerShellLink against the simulated host', () => {
  it('round-trips a call: the objects come back as JSON', async () => {
    const [made] = await link.call<{ Name: string; Id: string }>(NEW_VM, {
      name: 'web',
      generation: 2,
      memory: 2 ** 30,
    });
    expect(made?.Name).toBe('web');
    expect(await link.call(GET_VM, { name: 'web' })).toEqual([expect.objectContaining({ Name: 'web', Notes: '' })]);
  });

  it('carries hostile strings intact and never puts them in the script text', async () => {
    const hostile = [
      `it's "quoted"`,
      'a $(Remove-Item -Recurse C:\\) b',
      'back`tick`n; Stop-Computer',
      'line one\nline two\r\nthree',
      'non-ASCII: Grüße, 日本語, ✓',
      `${'x'.repeat(290)}-300-chars`,
    ];
    for (const [i, name] of hostile.entries()) {
      await link.call(NEW_VM, { name, generation: 1, memory: 2 ** 28 });
      const notes = `${name} notes ${i}`;
      await link.call(SET_NOTES, { name, notes });
      expect(await link.call(GET_VM, { name })).toEqual([expect.objectContaining({ Name: name, Notes: notes })]);
    }
    expect((await host.state()).vms.map((v) => v.name)).toEqual(hostile);
    const log = await host.scriptLog();
    expect(log.filter((e) => e.kind === 'script').length).toBeGreaterThanOrEqual(hostile.length * 3);
    for (const entry of log) {
      for (const name of hostile) expect(entry.text.includes(name.slice(0, 12))).toBe(false);
    }
  });

  it('turns a misspelled cmdlet or parameter into a DriverError with PowerShell category', async () => {
    const cmdlet = await driverError(link.call({ name: 'typo-cmdlet', body: 'Get-VMM -Name $p.name' }, { name: 'x' }));
    expect(cmdlet.code).toBe('E_DRIVER');
    expect(cmdlet.details).toMatchObject({ category: 'ObjectNotFound', errorId: 'CommandNotFoundException' });
    const parameter = await driverError(link.call({ name: 'typo-param', body: 'Get-VM -Nmae $p.name' }, { name: 'x' }));
    expect(parameter.details).toMatchObject({ category: 'InvalidArgument' });
    expect(parameter.message).toContain("'Nmae'");
    const missing = await driverError(link.call(GET_VM, { name: 'nope' }));
    expect(missing.message).toContain('unable to find a virtual machine');
    expect(await link.call(LIST_VMS)).toEqual([]);
  });

  it('kills a hung call at its timeout and runs the next call on a new shell', async () => {
    await link.call(NEW_VM, { name: 'web', generation: 2, memory: 2 ** 30 });
    await host.armFaults({ hang: ['Get-VM'] });
    const hung = await driverError(link.call(GET_VM, { name: 'web' }, { timeoutMs: 1_500 }));
    expect(hung.details).toMatchObject({ category: 'OperationTimeout' });
    expect(await link.call(GET_VM, { name: 'web' })).toEqual([expect.objectContaining({ Name: 'web' })]);
    const setups = (await host.scriptLog()).filter((e) => e.kind === 'line' && e.text.includes('Import-Module'));
    expect(setups.length).toBe(2);
  });
});
