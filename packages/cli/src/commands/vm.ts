import { resolve } from 'node:path';
import { defaultDriverRegistry, formatBytes, type Hypervisor, NotFoundError, parseSize } from '@replikit/core';
import { createFileDriver, createFileVM, importFileVM } from '@replikit/driver-file';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { driverPackageOf, loadDriverPackages } from '../drivers.js';
import { loadJobForCli } from '../job-file.js';
import { printableLine } from '../output/printable.js';

/** Options of {@link vmCommand}. */
export interface VmOptions {
  /** The file driver's root folder (`--root`); default: the working folder. */
  root?: string;
  /** `--disk id:size`, for `vm create`. */
  disks?: string[];
  /** `--copy`, for `vm import`. */
  copy: boolean;
  /** `--json`, for `vm list`. */
  json: boolean;
  /** `--job FILE`, for `vm list`: list the VMs of the job's source (any driver kind, a Xen pool say). */
  job?: string;
}

/** The driver `vm list` asks: the job's source driver with `--job`, else the file driver at `root`. */
async function listingDriver(context: CliContext, root: string, jobFile: string | undefined) {
  if (jobFile === undefined) return { driver: createFileDriver({ root }) as Hypervisor, where: root };
  const job = await loadJobForCli(jobFile, context.cwd);
  const [missing] = await loadDriverPackages(job);
  if (missing !== undefined) {
    throw new NotFoundError(
      `the driver of kind '${missing}' is not installed; install it with \`npm install ${driverPackageOf(missing)}\` beside @replikit/cli`,
    );
  }
  const driver = await defaultDriverRegistry.create(job.source, { side: 'source', method: job.method });
  return { driver, where: `the source of job '${job.name}'` };
}

/** Parses `id:size` (`system:20GiB`). */
function parseDiskFlag(value: string): { id: string; size: number } {
  const at = value.lastIndexOf(':');
  if (at <= 0) throw new UsageError(`--disk takes id:size, such as system:20GiB, got '${value}'`);
  return { id: value.slice(0, at), size: parseSize(value.slice(at + 1), `--disk ${value}`) };
}

/**
 * `replikit vm import <name> <image>… [--copy]`, `vm create <name> --disk id:size…` and
 * `vm list [--json] [--job FILE]`, all with `[--root DIR]`: VM folders of the file driver (`vm list
 * --job` lists the VMs of a job's source instead, through its driver: a XenServer pool, say). An import hard-links
 * existing raw images into the folder (never copies them unless `--copy`, never links symbolically).
 */
export async function vmCommand(context: CliContext, args: string[], options: VmOptions): Promise<number> {
  const [sub, name, ...images] = args;
  const root = resolve(context.cwd, options.root ?? '.');
  switch (sub) {
    case 'import': {
      if (name === undefined || images.length === 0)
        throw new UsageError('vm import takes a VM name and its raw images');
      const result = await importFileVM(root, {
        name,
        images: images.map((path) => ({ path: resolve(context.cwd, path) })),
        copy: options.copy,
      });
      for (const disk of result.disks) {
        const how = disk.method === 'link' ? 'hard link, not copied' : `${disk.method}, a copy`;
        context.stdout.write(`disk '${disk.id}': ${disk.source} (${how})\n`);
      }
      context.stdout.write(`VM '${name}' imported in ${root}/${name}\n`);
      return 0;
    }
    case 'create': {
      if (name === undefined || images.length > 0) throw new UsageError('vm create takes one VM name');
      const disks = (options.disks ?? []).map(parseDiskFlag);
      if (disks.length === 0) throw new UsageError('vm create needs at least one --disk id:size');
      await createFileVM(root, { name, disks });
      context.stdout.write(`VM '${name}' created in ${root}/${name} (sparse raw disks, reading as zero)\n`);
      return 0;
    }
    case 'list': {
      if (name !== undefined) throw new UsageError('vm list takes no argument (the folder is --root, or --job)');
      const { driver, where } = await listingDriver(context, root, options.job);
      try {
        const vms = await driver.listVMs({ signal: context.signal });
        if (options.json) {
          context.stdout.write(`${JSON.stringify(vms, null, 2)}\n`);
        } else if (vms.length === 0) {
          context.stdout.write(`no VM in ${where}\n`);
        } else {
          for (const vm of vms) {
            const disks = vm.disks.map((d) => `${d.id} ${formatBytes(d.size)}`).join(', ');
            context.stdout.write(`${printableLine(`${vm.name}  ${vm.powerState}  ${disks}`)}\n`);
          }
        }
        return 0;
      } finally {
        await driver.close();
      }
    }
    default:
      throw new UsageError(`vm takes import, create or list, got ${sub === undefined ? 'nothing' : `'${sub}'`}`);
  }
}
