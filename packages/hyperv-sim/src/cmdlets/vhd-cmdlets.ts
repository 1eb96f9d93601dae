import { lstat } from 'node:fs/promises';
import { createVhdx, openVhd, openVhdx, VhdxReader } from '@replikit/formats';
import { hostPath } from '../host/host-state.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed } from '../objects/ps-object.js';
import { PsError } from '../ps-error.js';
import type { CmdletContext, CmdletHandler } from './context.js';

/**
 * The fields of `Microsoft.Vhd.PowerShell.VirtualHardDisk` the simulator models (enums as names;
 * the session converts them as ConvertTo-Json does), after
 * https://learn.microsoft.com/powershell/module/hyper-v/get-vhd. A `.vhd` file is VhdFormat `VHD`
 * with 512-byte sectors, a `.vhdx` file `VHDX`; a fixed VHD has BlockSize 0.
 */
export interface VhdView {
  Path: string;
  VhdFormat: 'VHD' | 'VHDX';
  VhdType: 'Fixed' | 'Dynamic' | 'Differencing';
  FileSize: number;
  Size: number;
  /**
   * The smallest size the disk can be shrunk to. A real host computes it from the guest's
   * partitions; the simulator does not read partitions and reports null.
   */
  MinimumSize: number | null;
  BlockSize: number;
  LogicalSectorSize: number;
  PhysicalSectorSize: number;
  ParentPath: string | null;
  DiskIdentifier: string | null;
  /** Whether the disk is mounted on the host (the simulator never mounts one: false). */
  Attached: boolean;
}

/** Describes the VHD or VHDX at `path` (a host path already checked). */
export async function describeVhd(path: string): Promise<VhdView> {
  const v1 = /\.vhd$/i.test(path);
  let reader: Awaited<ReturnType<typeof openVhdx>> | Awaited<ReturnType<typeof openVhd>>;
  try {
    reader = v1 ? await openVhd(path) : await openVhdx(path);
  } catch (error) {
    throw new PsError(
      'ObjectNotFound',
      `The system cannot find the file specified: '${path}'. ${(error as Error).message}`,
      'ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets.GetVHD',
    );
  }
  try {
    const info = reader.info;
    const type = info.subformat === 'fixed' ? 'Fixed' : info.subformat === 'differencing' ? 'Differencing' : 'Dynamic';
    return typed(TYPE_NAMES.vhd, {
      Path: path,
      VhdFormat: v1 ? 'VHD' : 'VHDX',
      VhdType: type,
      FileSize: (await lstat(path)).size,
      Size: info.size,
      MinimumSize: null,
      BlockSize: v1 && type === 'Fixed' ? 0 : info.blockSize,
      LogicalSectorSize: info.logicalSectorSize,
      PhysicalSectorSize: reader instanceof VhdxReader ? reader.metadata.physicalSectorSize : 512,
      ParentPath: info.parent ?? null,
      DiskIdentifier: info.id ?? null,
      Attached: false,
    } satisfies VhdView);
  } finally {
    await reader.close();
  }
}

const newVhd: CmdletHandler = async (c: CmdletContext) => {
  const path = await hostPath(c.root, c.arg('Path'), 'NewVHD');
  if (!path.toLowerCase().endsWith('.vhdx') && !path.toLowerCase().endsWith('.avhdx')) {
    throw new PsError(
      'InvalidArgument',
      `The simulator makes VHDX files only; '${path}' does not end in .vhdx.`,
      'InvalidParameter,Microsoft.Vhd.PowerShell.Cmdlets.NewVHD',
    );
  }
  if (await exists(path)) {
    throw new PsError(
      'ResourceExists',
      `The file '${path}' already exists.`,
      'FileExists,Microsoft.Vhd.PowerShell.Cmdlets.NewVHD',
    );
  }
  const blockSize = c.has('BlockSizeBytes') ? Number(c.arg('BlockSizeBytes')) : undefined;
  const logical = c.has('LogicalSectorSizeBytes') ? (Number(c.arg('LogicalSectorSizeBytes')) as 512 | 4096) : undefined;
  const physical = c.has('PhysicalSectorSizeBytes')
    ? (Number(c.arg('PhysicalSectorSizeBytes')) as 512 | 4096)
    : undefined;
  const common = {
    ...(blockSize ? { blockSize } : {}),
    ...(logical ? { logicalSectorSize: logical } : {}),
    ...(physical ? { physicalSectorSize: physical } : {}),
    sync: false,
  };
  if (c.has('Differencing')) {
    const parentPath = await hostPath(c.root, c.arg('ParentPath'), 'NewVHD');
    const parent = await openVhdx(parentPath);
    try {
      const writer = await createVhdx(path, { ...common, size: parent.size, parent });
      await writer.close();
    } finally {
      await parent.close();
    }
  } else {
    const size = Number(c.arg('SizeBytes'));
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new PsError(
        'InvalidArgument',
        'The SizeBytes parameter must be a positive number of bytes.',
        'InvalidParameter,Microsoft.Vhd.PowerShell.Cmdlets.NewVHD',
      );
    }
    const writer = await createVhdx(path, { ...common, size, type: c.has('Fixed') ? 'fixed' : 'dynamic' });
    await writer.close();
  }
  return describeVhd(path);
};

const getVhd: CmdletHandler = async (c) => describeVhd(await hostPath(c.root, c.arg('Path'), 'GetVHD'));

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** `New-VHD` and `Get-VHD`. */
export const VHD_CMDLETS: Record<string, CmdletHandler> = { 'New-VHD': newVhd, 'Get-VHD': getVhd };
