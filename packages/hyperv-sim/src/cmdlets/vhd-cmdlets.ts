import { lstat } from 'node:fs/promises';
import { createVhdx, openVhdx } from '@replikit/formats';
import { hostPath } from '../host/host-state.js';
import { PsError } from '../ps-error.js';
import type { CmdletContext, CmdletHandler } from './context.js';

/** The fields of `Microsoft.Vhd.PowerShell.VirtualHardDisk` the simulator reports (enums as names). */
export interface VhdView {
  Path: string;
  VhdFormat: 'VHDX';
  VhdType: 'Fixed' | 'Dynamic' | 'Differencing';
  FileSize: number;
  Size: number;
  BlockSize: number;
  LogicalSectorSize: number;
  PhysicalSectorSize: number;
  ParentPath: string | null;
  DiskIdentifier: string | null;
}

/** Describes the VHDX at `path` (a host path already checked). */
export async function describeVhd(path: string): Promise<VhdView> {
  let reader: Awaited<ReturnType<typeof openVhdx>>;
  try {
    reader = await openVhdx(path);
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
    return {
      Path: path,
      VhdFormat: 'VHDX',
      VhdType: type,
      FileSize: (await lstat(path)).size,
      Size: info.size,
      BlockSize: info.blockSize,
      LogicalSectorSize: info.logicalSectorSize,
      PhysicalSectorSize: reader.metadata.physicalSectorSize,
      ParentPath: info.parent ?? null,
      DiskIdentifier: info.id ?? null,
    };
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
