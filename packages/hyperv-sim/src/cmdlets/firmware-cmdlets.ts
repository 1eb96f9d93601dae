import { findVm, type VmRecord } from '../host/host-state.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed } from '../objects/ps-object.js';
import { PsError } from '../ps-error.js';
import type { CmdletHandler } from './context.js';

/**
 * `Get-VMFirmware` and `Set-VMFirmware`, Secure Boot only, after
 * https://learn.microsoft.com/powershell/module/hyper-v/get-vmfirmware and
 * https://learn.microsoft.com/powershell/module/hyper-v/set-vmfirmware: both work on generation 2
 * VMs only; `-EnableSecureBoot` takes `On` or `Off` (the OnOffState enum), `-SecureBootTemplate`
 * a template name of the host (`Get-VMHost | Select-Object -ExpandProperty SecureBootTemplates`
 * lists them on a real host). Simulator limits: boot order, network boot protocol, console mode and
 * `SecureBootTemplateId` are not modelled; the error texts are the simulator's own.
 */

/** The templates a Windows Server 2016+ host offers (the simulator's fixed list). */
export const SECURE_BOOT_TEMPLATES = ['MicrosoftWindows', 'MicrosoftUEFICertificateAuthority', 'OpenSourceShieldedVM'];

/** The fields of `Microsoft.HyperV.PowerShell.VMFirmware` the simulator reports (enums as names). */
function firmwareView(vm: VmRecord) {
  return typed(TYPE_NAMES.firmware, {
    VMName: vm.name,
    VMId: vm.id,
    SecureBoot: vm.secureBoot ?? 'On',
    SecureBootTemplate: vm.secureBootTemplate ?? 'MicrosoftWindows',
  });
}

function generation2(vm: VmRecord, cmdlet: string): VmRecord {
  if (vm.generation !== 2) {
    throw new PsError(
      'InvalidOperation',
      `'${vm.name}' is a generation 1 virtual machine; ${cmdlet} works on generation 2 virtual machines only.`,
      `InvalidOperation,Microsoft.HyperV.PowerShell.Commands.${cmdlet.replace('-', '')}Command`,
    );
  }
  return vm;
}

const getFirmware: CmdletHandler = async (c) =>
  firmwareView(generation2(findVm(c.state, c.arg('VMName'), 'Get-VMFirmware'), 'Get-VMFirmware'));

const setFirmware: CmdletHandler = async (c) => {
  const vm = generation2(findVm(c.state, c.arg('VMName'), 'Set-VMFirmware'), 'Set-VMFirmware');
  if (c.has('EnableSecureBoot')) {
    const value = String(c.arg('EnableSecureBoot'));
    const state = ['On', 'Off'].find((s) => s.toLowerCase() === value.toLowerCase());
    if (!state) {
      throw new PsError(
        'InvalidArgument',
        `Cannot bind parameter 'EnableSecureBoot'. Cannot convert value "${value}" to type "Microsoft.HyperV.PowerShell.OnOffState". The valid values are "On,Off".`,
        'CannotConvertArgumentNoMessage,Microsoft.HyperV.PowerShell.Commands.SetVMFirmware',
      );
    }
    vm.secureBoot = state as 'On' | 'Off';
  }
  if (c.has('SecureBootTemplate')) {
    const wanted = String(c.arg('SecureBootTemplate'));
    const template = SECURE_BOOT_TEMPLATES.find((t) => t.toLowerCase() === wanted.toLowerCase());
    if (!template) {
      throw new PsError(
        'InvalidArgument',
        `The secure boot template '${wanted}' is not one of this host's: ${SECURE_BOOT_TEMPLATES.join(', ')}.`,
        'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.SetVMFirmware',
      );
    }
    vm.secureBootTemplate = template;
  }
  c.markDirty();
  return c.has('Passthru') ? firmwareView(vm) : null;
};

/** The firmware cmdlets (Secure Boot). */
export const FIRMWARE_CMDLETS: Record<string, CmdletHandler> = {
  'Get-VMFirmware': getFirmware,
  'Set-VMFirmware': setFirmware,
};
