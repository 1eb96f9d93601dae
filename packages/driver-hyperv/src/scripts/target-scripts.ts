import type { PsScript } from '../powershell/ps-script.js';

// Every script of the target side. Fixed text: values arrive only as `$p.<field>`.

/** Every VM of the host with its notes (where a replica carries its replikit identity), state and folder. */
export const LIST_VM_NOTES: PsScript = {
  name: 'list-vm-notes',
  body: "Get-VM | Select-Object -Property 'Name', @{ Name = 'Id'; Expression = { $_.Id.ToString() } }, @{ Name = 'State'; Expression = { $_.State.ToString() } }, 'Notes', 'Path'",
};

/** A new VM `$p.name` without disks: generation `$p.generation`, `$p.memory` bytes, files in `$p.path`. */
export const NEW_REPLICA_VM: PsScript = {
  name: 'new-replica-vm',
  body: 'New-VM -Name $p.name -Generation $p.generation -MemoryStartupBytes $p.memory -Path $p.path -NoVHD',
};

/**
 * Secure Boot of generation 2 VM `$p.name`: `$p.secureBoot` (`On` or `Off`) with template
 * `$p.template` (`MicrosoftWindows`, `MicrosoftUEFICertificateAuthority`, …).
 */
export const SET_REPLICA_FIRMWARE: PsScript = {
  name: 'set-replica-firmware',
  body: 'Set-VMFirmware -VMName $p.name -EnableSecureBoot $p.secureBoot -SecureBootTemplate $p.template',
};

/** Sets VM `$p.name`'s processor count (`$p.cpus`) and notes (`$p.notes`: the replica's identity). */
export const SET_REPLICA_VM: PsScript = {
  name: 'set-replica-vm',
  body: 'Set-VM -Name $p.name -ProcessorCount $p.cpus -StaticMemory -Notes $p.notes',
};

/** Removes network adapter `$p.nic` of VM `$p.vm`. */
export const REMOVE_NIC: PsScript = {
  name: 'remove-nic',
  body: 'Remove-VMNetworkAdapter -VMName $p.vm -Name $p.nic',
};

/** Adds network adapter `$p.nic` with MAC `$p.mac` to VM `$p.vm`, connected to switch `$p.switch`. */
export const ADD_NIC_CONNECTED: PsScript = {
  name: 'add-nic-connected',
  body: 'Add-VMNetworkAdapter -VMName $p.vm -Name $p.nic -StaticMacAddress $p.mac -SwitchName $p.switch',
};

/** Adds network adapter `$p.nic` with MAC `$p.mac` to VM `$p.vm`, connected to nothing. */
export const ADD_NIC_DISCONNECTED: PsScript = {
  name: 'add-nic-disconnected',
  body: 'Add-VMNetworkAdapter -VMName $p.vm -Name $p.nic -StaticMacAddress $p.mac',
};

/** Adds network adapter `$p.nic` with a MAC of the host's pool to VM `$p.vm`, connected to nothing. */
export const ADD_NIC_DYNAMIC: PsScript = {
  name: 'add-nic-dynamic',
  body: 'Add-VMNetworkAdapter -VMName $p.vm -Name $p.nic',
};

/** An empty dynamic VHDX at `$p.path` of `$p.size` bytes, blocks of `$p.block` bytes. */
export const NEW_DYNAMIC_VHD: PsScript = {
  name: 'new-dynamic-vhd',
  body: 'New-VHD -Path $p.path -SizeBytes $p.size -Dynamic -BlockSizeBytes $p.block',
};

/** Attaches the VHDX at `$p.path` to VM `$p.vm` (the next free slot of its default controller). */
export const ADD_DRIVE: PsScript = {
  name: 'add-drive',
  body: 'Add-VMHardDiskDrive -VMName $p.vm -Path $p.path',
};

/** Checkpoint `$p.label` of VM `$p.vm` (a restore point of a replica). */
export const CHECKPOINT_REPLICA: PsScript = {
  name: 'checkpoint-replica',
  body: 'Checkpoint-VM -Name $p.vm -SnapshotName $p.label',
};

/** Applies checkpoint `$p.name` of VM `$p.vm`: the writes made after it are discarded. */
export const RESTORE_CHECKPOINT: PsScript = {
  name: 'restore-checkpoint',
  body: 'Restore-VMSnapshot -VMName $p.vm -Name $p.name',
};

/** Starts VM `$p.vm`. */
export const START_VM: PsScript = { name: 'start-vm', body: 'Start-VM -Name $p.vm' };

/**
 * Shuts VM `$p.vm` down through its guest (the integration services' shutdown; `-Force` answers
 * the prompt a guest with open applications would raise, it does not cut power).
 */
export const SHUTDOWN_VM: PsScript = { name: 'shutdown-vm', body: 'Stop-VM -Name $p.vm -Force' };

/** Turns VM `$p.vm` off. */
export const STOP_VM: PsScript = { name: 'stop-vm', body: 'Stop-VM -Name $p.vm -TurnOff' };

/** Removes VM `$p.vm` (its configuration; the driver deletes the replica's folder itself). */
export const REMOVE_VM: PsScript = { name: 'remove-vm', body: 'Remove-VM -Name $p.vm -Force' };

/** The host's default folder for new virtual hard disks (where a replica goes without `replicaPath`). */
export const HOST_DISK_FOLDER: PsScript = {
  name: 'host-disk-folder',
  body: "Get-VMHost | Select-Object -Property 'VirtualHardDiskPath'",
};

/** Every script of the target side, for the test that parses each one. */
export const TARGET_SCRIPTS: readonly PsScript[] = [
  LIST_VM_NOTES,
  NEW_REPLICA_VM,
  SET_REPLICA_FIRMWARE,
  SET_REPLICA_VM,
  REMOVE_NIC,
  ADD_NIC_CONNECTED,
  ADD_NIC_DISCONNECTED,
  ADD_NIC_DYNAMIC,
  NEW_DYNAMIC_VHD,
  ADD_DRIVE,
  CHECKPOINT_REPLICA,
  RESTORE_CHECKPOINT,
  START_VM,
  SHUTDOWN_VM,
  STOP_VM,
  REMOVE_VM,
  HOST_DISK_FOLDER,
];
