import { describe, expect, it } from 'vitest';
import { vmSecureBoot } from '../src/xen-records.js';

// Secure Boot as a XAPI VM record says it: `platform:secureboot` on a UEFI VM.
describe('Secure Boot of a Xen VM', () => {
  const uefi = (platform: Record<string, string>) => ({ HVM_boot_params: { firmware: 'uefi' }, platform });

  it('true is on; false or unset is off; auto cannot be told from the VM; a BIOS VM has none', () => {
    expect(vmSecureBoot(uefi({ secureboot: 'true' }))).toBe(true);
    expect(vmSecureBoot(uefi({ secureboot: 'false' }))).toBe(false);
    expect(vmSecureBoot(uefi({}))).toBe(false);
    expect(vmSecureBoot(uefi({ secureboot: 'auto' }))).toBeUndefined();
    expect(vmSecureBoot({ HVM_boot_params: { firmware: 'bios' }, platform: { secureboot: 'true' } })).toBeUndefined();
    expect(vmSecureBoot({ HVM_boot_params: {} })).toBeUndefined();
  });
});
