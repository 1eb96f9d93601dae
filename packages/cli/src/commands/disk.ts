import { resolve } from 'node:path';
import { formatBytes, parseSize } from '@replikit/core';
import {
  checkImage,
  compareDisks,
  convertDisk,
  type ImageFormat,
  type ImageInfo,
  isXvaFile,
  openDisk,
} from '@replikit/formats';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { formatDuration } from '../output/format.js';
import { diskToXva, outputFormat, xvaInfo, xvaToDisk } from './disk-xva.js';

/** Options of `replikit disk …` taken from the command line. */
export interface DiskCommandOptions {
  json: boolean;
  /** `--to raw|vhd|vhdx|xva` of `disk convert` (else taken from the output's extension). */
  to?: string | undefined;
  /** `--disk N|Ref:N|uuid` of `disk convert` from an XVA holding several disks. */
  disk?: string | undefined;
  /** `--block-size N` of `disk convert`. */
  blockSize?: string | undefined;
}

const FORMATS: readonly string[] = ['raw', 'vhd', 'vhdx', 'xva'];

function files(args: string[], count: number, usage: string): string[] {
  if (args.length !== count) throw new UsageError(`expected ${usage}, got ${args.length} argument(s)`);
  return args;
}

function describe(info: ImageInfo & { allocatedBytes?: number }): string {
  const lines = [
    `${info.path}`,
    `  format:        ${info.format}${info.subformat === 'raw' ? '' : ` (${info.subformat})`}`,
    `  virtual size:  ${formatBytes(info.size)} (${info.size} bytes)`,
    `  block size:    ${formatBytes(info.blockSize)}`,
    `  sector size:   ${info.logicalSectorSize} bytes`,
    `  file size:     ${formatBytes(info.fileSize)}`,
  ];
  if (info.allocatedBytes !== undefined) lines.push(`  allocated:     ${formatBytes(info.allocatedBytes)}`);
  if (info.id) lines.push(`  id:            ${info.id}`);
  if (info.parent) lines.push(`  parent:        ${info.parent}`);
  for (const [key, value] of Object.entries(info.extra)) {
    const label = `${key}:`.padEnd(15);
    lines.push(
      `  ${label}${label.length >= 15 ? ' ' : ''}${typeof value === 'object' ? JSON.stringify(value) : String(value)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/**
 * `replikit disk info|convert|compare|check`: inspect, convert, compare and check disk images
 * (raw, VHD, VHDX; XVA for `info` and `convert`, one disk out or one disk in). `compare` exits 0 when the virtual contents are equal and 1 (with the first
 * differing offset) when not; `check` exits 1 when it finds a problem.
 */
export async function diskCommand(context: CliContext, args: string[], options: DiskCommandOptions): Promise<number> {
  const [sub, ...rest] = args;
  const at = (path: string) => resolve(context.cwd, path);
  switch (sub) {
    case 'info': {
      const [file] = files(rest, 1, 'disk info <file>');
      if (await isXvaFile(at(file!))) {
        await xvaInfo(context, at(file!), file!, options.json);
        return 0;
      }
      const reader = await openDisk(at(file!), { scanRawHoles: false });
      try {
        let allocated = 0;
        if (reader.info.format !== 'raw') {
          for await (const e of reader.allocated({ signal: context.signal })) allocated += e.length;
        }
        const info = { ...reader.info, ...(reader.info.format !== 'raw' ? { allocatedBytes: allocated } : {}) };
        context.stdout.write(options.json ? `${JSON.stringify(info, null, 2)}\n` : describe(info));
      } finally {
        await reader.close();
      }
      return 0;
    }
    case 'convert': {
      const [input, output] = files(rest, 2, 'disk convert <in> <out> [--to raw|vhd|vhdx|xva]');
      const to = outputFormat(options.to, output!);
      if (!to || !FORMATS.includes(to)) {
        throw new UsageError(
          `disk convert needs --to raw, vhd, vhdx or xva (got ${to ?? `nothing, and ${output} has no known extension`})`,
        );
      }
      const blockSize = options.blockSize === undefined ? undefined : parseSize(options.blockSize, '--block-size');
      const fromXva = await isXvaFile(at(input!));
      if (to === 'xva' && fromXva) throw new UsageError('disk convert reads an XVA or writes one, not both');
      if (to === 'xva' && blockSize)
        throw new UsageError('--block-size does not apply to an XVA (its chunks are 1 MiB)');
      if (options.disk !== undefined && !fromXva) throw new UsageError('--disk applies only to an XVA input');
      const started = performance.now();
      let note = '';
      if (fromXva) {
        const vdi = await xvaToDisk(
          context,
          { input: at(input!), output: at(output!), shown: input! },
          { to: to as ImageFormat, disk: options.disk, blockSize },
        );
        note = `, disk ${vdi.ref}${vdi.name ? ` '${vdi.name}'` : ''}`;
      } else if (to === 'xva') {
        await diskToXva(context, at(input!), at(output!));
      } else {
        await convertDisk(at(input!), at(output!), {
          to: to as ImageFormat,
          ...(blockSize ? { blockSize } : {}),
          signal: context.signal,
        });
      }
      const ms = performance.now() - started;
      if (options.json) context.stdout.write(`${JSON.stringify({ input, output, to, ms: Math.round(ms) })}\n`);
      else context.stdout.write(`converted ${input} to ${output} (${to}${note}) in ${formatDuration(ms)}\n`);
      return 0;
    }
    case 'compare': {
      const [a, b] = files(rest, 2, 'disk compare <a> <b>');
      const ra = await openDisk(at(a!), { scanRawHoles: false });
      try {
        const rb = await openDisk(at(b!), { scanRawHoles: false });
        try {
          const result = await compareDisks(ra, rb, { signal: context.signal });
          if (options.json) context.stdout.write(`${JSON.stringify(result)}\n`);
          else if (result.equal) context.stdout.write(`${a} and ${b} have equal contents (${formatBytes(ra.size)})\n`);
          else if (result.sizes) {
            context.stdout.write(
              `${a} and ${b} differ: sizes ${result.sizes.a} and ${result.sizes.b} bytes (equal up to byte ${result.firstDifference})\n`,
            );
          } else context.stdout.write(`${a} and ${b} differ: first difference at byte ${result.firstDifference}\n`);
          return result.equal ? 0 : 1;
        } finally {
          await rb.close();
        }
      } finally {
        await ra.close();
      }
    }
    case 'check': {
      const [file] = files(rest, 1, 'disk check <file>');
      const report = await checkImage(at(file!));
      if (options.json) {
        context.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      } else {
        const kind = report.info
          ? ` (${report.info.format}${report.info.subformat === 'raw' ? '' : ` ${report.info.subformat}`})`
          : '';
        context.stdout.write(
          report.ok ? `${file}${kind}: no problem found\n` : `${file}${kind}: ${report.problems.length} problem(s)\n`,
        );
        for (const p of report.problems) context.stdout.write(`  error: ${p}\n`);
        for (const w of report.warnings) context.stdout.write(`  warning: ${w}\n`);
      }
      return report.ok ? 0 : 1;
    }
    default:
      throw new UsageError(
        sub === undefined
          ? 'disk needs a subcommand: info, convert, compare or check'
          : `unknown disk subcommand '${sub}'`,
      );
  }
}
