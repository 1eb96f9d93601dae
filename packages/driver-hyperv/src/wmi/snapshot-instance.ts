/**
 * The `InstanceID` of a checkpoint's `Msvm_VirtualSystemSettingData`: `Microsoft:<checkpoint id>`
 * (the id `Get-VMSnapshot` gives), as Hyper-V names a snapshot's settings.
 */
export function snapshotInstanceId(checkpointId: string): string {
  return `Microsoft:${checkpointId.toUpperCase()}`;
}

/** The checkpoint id (lower case) a snapshot's settings InstanceID names, or `undefined` for another form. */
export function checkpointIdOf(instanceId: string): string | undefined {
  return /^Microsoft:([0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12})$/.exec(instanceId)?.[1]?.toLowerCase();
}
