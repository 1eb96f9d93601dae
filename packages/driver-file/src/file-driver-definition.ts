import { defineDriver } from '@replikit/core';
import { z } from 'zod';
import { createFileDriver, FILE_DRIVER_CAPABILITIES, FILE_DRIVER_KIND } from './file-driver.js';

/**
 * The file driver's fields in a job's `source` or `target` (besides `driver`, and `vm` or
 * `replicaName`, which core owns). Strict: a misspelt field is reported by name.
 */
export const fileDriverOptionsSchema = z.strictObject({
  /** The folder holding one sub-folder per VM (and per replica). */
  root: z
    .string({ error: 'expected the folder that holds the VMs, such as "./vms"' })
    .min(1, 'expected the folder that holds the VMs, such as "./vms"')
    .refine((root) => !root.includes('\0'), 'a folder path cannot hold a NUL character'),
  /**
   * Keep every replica and disk under `root` (what `replikit-agent` asks for).
   * @default false
   */
  confine: z.boolean().default(false),
  /**
   * Try copy-on-write clones for snapshots before the sparse copy.
   * @default true
   */
  reflink: z.boolean().default(true),
});

/** The file driver's options as a job gives them (defaults not applied). */
export type FileDriverJobOptions = z.input<typeof fileDriverOptionsSchema>;

/**
 * The file driver as a definition: register it once and name `driver: file` in a job.
 *
 * @example
 * ```ts
 * import { registerDriver } from '@replikit/core';
 * import { fileDriver } from '@replikit/driver-file';
 *
 * registerDriver(fileDriver);
 * // job: source: { driver: file, root: ./vms, vm: web }
 * ```
 */
export const fileDriver = defineDriver({
  kind: FILE_DRIVER_KIND,
  capabilities: FILE_DRIVER_CAPABILITIES,
  options: fileDriverOptionsSchema,
  create: (options) => createFileDriver(options),
});
