import { hostDefaults, poolDefaults } from './host-defaults.js';
import { networkDefaults, pifDefaults, taskDefaults, vifDefaults } from './network-defaults.js';
import { pbdDefaults, srDefaults, vbdDefaults, vdiDefaults } from './storage-defaults.js';
import { vmDefaults } from './vm-defaults.js';
import type { XClass, XRecord } from './wire.js';

/** The full default record of each class: the field set every record of that class carries. */
export const RECORD_DEFAULTS: Record<XClass, () => XRecord> = {
  pool: poolDefaults,
  host: hostDefaults,
  SR: srDefaults,
  PBD: pbdDefaults,
  VDI: vdiDefaults,
  VBD: vbdDefaults,
  VM: vmDefaults,
  VIF: vifDefaults,
  network: networkDefaults,
  PIF: pifDefaults,
  task: taskDefaults,
};

/**
 * Fields a client may set with `set_<f>` (scalars), `add_to_<f>`/`remove_from_<f>` (maps) or
 * `add_<f>`/`remove_<f>` (sets), per class.
 */
export const WRITABLE_FIELDS: Record<XClass, readonly string[]> = {
  pool: ['name_label', 'name_description', 'other_config', 'tags', 'default_SR', 'gui_config'],
  host: ['name_label', 'name_description', 'other_config', 'tags', 'logging'],
  SR: ['name_label', 'name_description', 'other_config', 'tags', 'sm_config'],
  PBD: ['other_config', 'device_config'],
  VDI: [
    'name_label',
    'name_description',
    'other_config',
    'tags',
    'sm_config',
    'xenstore_data',
    'sharable',
    'read_only',
  ],
  VBD: ['other_config', 'userdevice', 'mode', 'bootable', 'qos_algorithm_type', 'qos_algorithm_params'],
  VM: [
    'name_label',
    'name_description',
    'other_config',
    'tags',
    'blocked_operations',
    'xenstore_data',
    'platform',
    'HVM_boot_policy',
    'HVM_boot_params',
    'VCPUs_params',
    'is_a_template',
    'affinity',
    'ha_restart_priority',
    'PV_bootloader',
    'PV_kernel',
    'PV_ramdisk',
    'PV_args',
    'PV_bootloader_args',
    'PV_legacy_args',
    'actions_after_shutdown',
    'actions_after_reboot',
    'actions_after_crash',
    'recommendations',
    'user_version',
    'NVRAM',
    'bios_strings',
  ],
  VIF: ['other_config', 'locking_mode', 'qos_algorithm_type', 'qos_algorithm_params'],
  network: ['name_label', 'name_description', 'other_config', 'tags', 'purpose', 'MTU'],
  PIF: ['other_config'],
  task: ['other_config', 'status', 'progress', 'result', 'error_info'],
};
