import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PowerShell } from 'node-powershell';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSimulatedHost } from '../src/index.js';
import { simShell } from './helpers/sim-shell.js';

const FIRMWARE =
  "Get-VMFirmware -VMName $p.name | Select-Object -Property @{ Name = 'SecureBoot'; Expression = { $_.SecureBoot.ToString() } }, 'SecureBootTemplate'";

// Secure Boot as Get-VMFirmware / Set-VMFirmware show and change it (generation 2 only).
describe('the simulated host models Secure Boot through Get-VMFirmware and Set-VMFirmware', () => {
  let dir: string;
  let shell: PowerShell;
  let call: ReturnType<typeof simShell>['call'];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hyperv-fw-'));
    const host = await createSimulatedHost(dir);
    ({ shell, call } = simShell(host.pwsh));
    await call('New-VM -Name $p.name -Generation 2 -NoVHD', { name: 'g2' });
    await call('New-VM -Name $p.name -Generation 1 -NoVHD', { name: 'g1' });
  }, 60_000);
  afterAll(async () => {
    await shell?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('a new generation 2 VM has Secure Boot on with the Windows template; Set-VMFirmware changes both', async () => {
    expect(await call(FIRMWARE, { name: 'g2' })).toMatchObject([
      { SecureBoot: 'On', SecureBootTemplate: 'MicrosoftWindows' },
    ]);
    await call('Set-VMFirmware -VMName $p.name -EnableSecureBoot $p.on -SecureBootTemplate $p.template', {
      name: 'g2',
      on: 'Off',
      template: 'MicrosoftUEFICertificateAuthority',
    });
    expect(await call(FIRMWARE, { name: 'g2' })).toMatchObject([
      { SecureBoot: 'Off', SecureBootTemplate: 'MicrosoftUEFICertificateAuthority' },
    ]);
  });

  it('refuses a generation 1 VM, a value that is not On or Off, an unknown template and a misspelled parameter', async () => {
    await expect(call(FIRMWARE, { name: 'g1' })).rejects.toThrow(/generation 2 virtual machines only/);
    await expect(
      call('Set-VMFirmware -VMName $p.name -EnableSecureBoot $p.on', { name: 'g2', on: 'Maybe' }),
    ).rejects.toThrow(/OnOffState/);
    await expect(
      call('Set-VMFirmware -VMName $p.name -SecureBootTemplate $p.t', { name: 'g2', t: 'NoSuchTemplate' }),
    ).rejects.toThrow(/NoSuchTemplate/);
    await expect(call('Set-VMFirmware -VMName $p.name -EnableSecureBot On', { name: 'g2' })).rejects.toThrow(
      /EnableSecureBot/,
    );
  });
});
