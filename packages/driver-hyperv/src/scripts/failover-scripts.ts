import type { PsScript } from '../powershell/ps-script.js';

// Every script of the failover hooks. Fixed text: values arrive only as `$p.<field>`.

/** Sets the notes of VM `$p.name` (a clone's or a retired replica's replikit record). */
export const SET_VM_NOTES: PsScript = {
  name: 'set-vm-notes',
  body: 'Set-VM -Name $p.name -Notes $p.notes',
};

/** Adds network adapter `$p.nic` with a MAC of the host's pool to VM `$p.vm`, connected to switch `$p.switch`. */
export const ADD_NIC_DYNAMIC_CONNECTED: PsScript = {
  name: 'add-nic-dynamic-connected',
  body: 'Add-VMNetworkAdapter -VMName $p.vm -Name $p.nic -SwitchName $p.switch',
};

/** Every script of the failover hooks, for the test that parses each one. */
export const FAILOVER_SCRIPTS: readonly PsScript[] = [SET_VM_NOTES, ADD_NIC_DYNAMIC_CONNECTED];
