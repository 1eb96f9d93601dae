/**
 * The numeric values of the enums the simulated objects carry. `ConvertTo-Json` writes an enum as
 * its number (Windows PowerShell 5.1, and PowerShell 7 without `-EnumsAsStrings`); `.ToString()`
 * gives its name. Values as the Hyper-V module and the WMI classes behind it define them:
 * `VhdFormat` and `VhdType` follow Msvm_VirtualHardDiskSettingData's `Format` and `Type`
 * (https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualharddisksettingdata); VMState,
 * ControllerType, CheckpointType, SnapshotType and OnOffState are the
 * Microsoft.HyperV.PowerShell enums (https://learn.microsoft.com/powershell/module/hyper-v/):
 * their values were not found on a searchable reference page, so they are the module's values as
 * the author knows them; check them on a real host before relying on a number.
 */
export const ENUMS: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  VMState: {
    Other: 1,
    Running: 2,
    Off: 3,
    Stopping: 4,
    Saved: 6,
    Paused: 9,
    Starting: 10,
    Reset: 11,
    Saving: 32773,
    Pausing: 32776,
    Resuming: 32777,
  },
  ControllerType: { IDE: 0, SCSI: 1 },
  VhdFormat: { Unknown: 0, VHD: 2, VHDX: 3, VHDSet: 4 },
  VhdType: { Unknown: 0, Fixed: 2, Dynamic: 3, Differencing: 4 },
  CheckpointType: { Disabled: 2, Production: 3, ProductionOnly: 4, Standard: 5 },
  SnapshotType: { Standard: 0, Recovery: 1, Planned: 2, Missing: 3, Replica: 4 },
  OnOffState: { On: 0, Off: 1 },
};
