import { describe, expect, it } from 'vitest';
import { coreMac, firmwareOf } from '../src/hyperv-records.js';
import { hyperVMac, planNics, replicaFirmware, replicaGeneration } from '../src/target/replica-shape.js';

// What a Hyper-V VM tells a target of another kind, and what a Hyper-V replica takes from one.
describe('Hyper-V ⇄ core VMInfo mapping', () => {
  it('a Hyper-V MAC in core spelling; none for no MAC and for an unassigned dynamic MAC (all zeros)', () => {
    expect(coreMac('00155D0A0B0C')).toBe('00:15:5d:0a:0b:0c');
    expect(coreMac('00-15-5D-0A-0B-0C')).toBe('00:15:5d:0a:0b:0c');
    expect(coreMac('000000000000')).toBe('');
    expect(coreMac(null)).toBe('');
    expect(coreMac('not a mac')).toBe('');
  });

  it('generation 1 boots BIOS, generation 2 UEFI, both ways', () => {
    expect(firmwareOf(1)).toBe('bios');
    expect(firmwareOf(2)).toBe('uefi');
    const xen = { id: 'x', name: 'x', cpus: 1, memoryMiB: 512, powerState: 'stopped' as const, disks: [] };
    expect(replicaGeneration({ ...xen, firmware: 'bios' })).toBe(1);
    expect(replicaGeneration({ ...xen, firmware: 'uefi' })).toBe(2);
  });

  it("Secure Boot: kept from a UEFI source that says, with its own template or the job's (Windows by default)", () => {
    const xen = { id: 'x', name: 'x', cpus: 1, memoryMiB: 512, powerState: 'stopped' as const, disks: [] };
    expect(replicaFirmware({ ...xen, firmware: 'uefi', secureBoot: true })).toEqual({
      secureBoot: 'On',
      template: 'MicrosoftWindows',
    });
    expect(
      replicaFirmware({ ...xen, firmware: 'uefi', secureBoot: true }, 'MicrosoftUEFICertificateAuthority'),
    ).toEqual({
      secureBoot: 'On',
      template: 'MicrosoftUEFICertificateAuthority',
    });
    expect(replicaFirmware({ ...xen, firmware: 'uefi', secureBoot: false })).toEqual({
      secureBoot: 'Off',
      template: 'MicrosoftWindows',
    });
    // A Hyper-V source's template wins over the job's.
    const hv = {
      ...xen,
      generation: 2,
      firmware: 'uefi' as const,
      secureBoot: true,
      secureBootTemplate: 'OpenSourceShieldedVM',
    };
    expect(replicaFirmware(hv, 'MicrosoftWindows')).toEqual({ secureBoot: 'On', template: 'OpenSourceShieldedVM' });
    // Nothing said (XAPI `auto`), or a BIOS guest: Hyper-V's default stands / there is no Secure Boot.
    expect(replicaFirmware({ ...xen, firmware: 'uefi' })).toBeUndefined();
    expect(replicaFirmware({ ...xen, firmware: 'bios', secureBoot: true })).toBeUndefined();
  });

  it("a Xen source's MACs become static MACs of the replica's adapters, in order", () => {
    const xen = {
      id: 'x',
      name: 'x',
      cpus: 1,
      memoryMiB: 512,
      powerState: 'running' as const,
      disks: [],
      networks: ['net-a', 'net-b'],
      macs: ['02:00:00:aa:00:01', ''],
    };
    const plan = planNics(xen, { 'net-a': 'LAN' });
    expect(plan.nics).toEqual([
      { name: 'Network Adapter 1', mac: '020000AA0001', switchName: 'LAN' },
      { name: 'Network Adapter 2', mac: undefined, switchName: undefined },
    ]);
    expect(plan.unmapped).toEqual(['net-b']);
    expect(hyperVMac('02:00:00:aa:00:01')).toBe('020000AA0001');
  });
});
