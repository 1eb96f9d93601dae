import { basename, extname } from 'node:path';
import { formatBytes } from '@replikit/core';
import {
  convertDiskToXva,
  convertXvaToDisk,
  type ImageFormat,
  readXvaFileHeader,
  type XapiValue,
  type XvaHeader,
  type XvaVdi,
} from '@replikit/formats';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';

const text = (v: XapiValue | undefined): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : '');

/** The VM of an XVA header, in plain terms. */
function vmSummary(header: XvaHeader) {
  const vm = header.vm;
  const memory = Number(text(vm.memory_static_max));
  return {
    name: text(vm.name_label),
    uuid: text(vm.uuid),
    cpus: Number(text(vm.VCPUs_max)) || undefined,
    memoryBytes: Number.isSafeInteger(memory) && memory > 0 ? memory : undefined,
    firmware:
      typeof vm.HVM_boot_params === 'object' && !Array.isArray(vm.HVM_boot_params)
        ? text(vm.HVM_boot_params.firmware) || undefined
        : undefined,
  };
}

/** `replikit disk info vm.xva`: the VM and its disks (index, VDI reference, name, size). */
export async function xvaInfo(context: CliContext, path: string, shown: string, json: boolean): Promise<void> {
  const header = await readXvaFileHeader(path);
  const vm = vmSummary(header);
  const disks = header.vdis.map((v, index) => ({ index, ref: v.ref, name: v.name, uuid: v.uuid, size: v.size }));
  if (json) {
    context.stdout.write(
      `${JSON.stringify({ path: shown, format: 'xva', compression: header.compression, vm, disks }, null, 2)}\n`,
    );
    return;
  }
  const lines = [
    shown,
    `  format:        xva${header.compression === 'none' ? '' : ` (${header.compression}-compressed)`}`,
    `  VM:            ${vm.name}${vm.uuid ? ` (${vm.uuid})` : ''}`,
  ];
  if (vm.cpus) lines.push(`  CPUs:          ${vm.cpus}`);
  if (vm.memoryBytes) lines.push(`  memory:        ${formatBytes(vm.memoryBytes)}`);
  if (vm.firmware) lines.push(`  firmware:      ${vm.firmware}`);
  lines.push(`  disks:         ${disks.length}`);
  for (const d of disks) {
    lines.push(`    ${d.index}: ${d.ref}  ${d.name || '(no name)'}  ${formatBytes(d.size)} (${d.size} bytes)`);
  }
  context.stdout.write(`${lines.join('\n')}\n`);
}

/** Picks the disk named by `--disk` (an index, a VDI reference or a uuid), or the only one. */
function pickDisk(vdis: XvaVdi[], selector: string | undefined, shown: string): XvaVdi {
  const list = vdis.map((v, i) => `${i} = ${v.ref}`).join(', ');
  if (selector === undefined) {
    if (vdis.length === 1) return vdis[0]!;
    throw new UsageError(
      vdis.length === 0
        ? `${shown} holds no disk`
        : `${shown} holds ${vdis.length} disks (${list}): choose one with --disk <index or Ref:N>`,
    );
  }
  const found = /^\d+$/.test(selector)
    ? vdis[Number(selector)]
    : vdis.find((v) => v.ref === selector || (v.uuid !== '' && v.uuid === selector));
  if (!found) throw new UsageError(`${shown} has no disk '${selector}' (it has ${list || 'none'})`);
  return found;
}

/** The output format: `--to`, else the output's extension. */
export function outputFormat(to: string | undefined, output: string): string | undefined {
  if (to !== undefined) return to;
  const ext = extname(output).toLowerCase();
  return { '.raw': 'raw', '.img': 'raw', '.vhd': 'vhd', '.vhdx': 'vhdx', '.xva': 'xva' }[ext];
}

/** `replikit disk convert vm.xva out.<raw|vhd|vhdx> [--disk N]`. */
export async function xvaToDisk(
  context: CliContext,
  paths: { input: string; output: string; shown: string },
  options: { to: ImageFormat; disk: string | undefined; blockSize: number | undefined },
): Promise<XvaVdi> {
  const header = await readXvaFileHeader(paths.input);
  const vdi = pickDisk(header.vdis, options.disk, paths.shown);
  return convertXvaToDisk(paths.input, paths.output, {
    to: options.to,
    ref: vdi.ref,
    ...(options.blockSize ? { blockSize: options.blockSize } : {}),
    signal: context.signal,
  });
}

/** `replikit disk convert in.<raw|vhd|vhdx> out.xva --to xva`: a one-disk VM named after the input. */
export async function diskToXva(context: CliContext, input: string, output: string): Promise<void> {
  const name = basename(input, extname(input)) || 'replikit';
  await convertDiskToXva(input, output, { vm: { name }, signal: context.signal });
}
