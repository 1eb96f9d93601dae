import { createHash } from 'node:crypto';
import { z } from 'zod';
import { scheduleOptionFields } from '../schedule/schedule-options.js';
import { parseRate } from '../util/sizes.js';

/** The replication methods core knows by name; drivers may add their own. */
export const KNOWN_METHODS = ['xva', 'abd', 'qhybrid', 'cbt'] as const;

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const nameRule = '1-128 letters, digits, dots, dashes or underscores, starting with a letter or digit';

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what we refuse
const controlCharacters = /[\u0000-\u001f\u007f]/;

/**
 * True when `name` cannot be one folder name of a driver that keeps a VM as a folder (the file
 * driver): the same rule as its `assertSafeName`, checked here so `replikit validate` says it
 * offline. Other drivers pass names to an API, where a `/` is their business.
 */
function pathLike(name: string): boolean {
  return /[/\\]/.test(name) || name.startsWith('.') || name.includes('..') || controlCharacters.test(name);
}

const FOLDER_RULE = "one folder name: no '/', '\\', '..', control characters or leading '.'";

const sizeOrRate = z
  .union([z.number(), z.string()], { error: 'expected bytes per second as a number or a rate such as "20MB/s"' })
  .transform((value, ctx) => {
    try {
      return parseRate(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message.replace(/^rate: /, '') });
      return z.NEVER;
    }
  });

/**
 * A side of a job: `driver` names the kind, every other field belongs to that driver and is checked
 * by the driver's own options schema once its package is loaded (see `defineDriver`). Core keeps
 * no schema of any platform's fields, so a job for a driver that is not installed still parses and
 * can be judged offline by the rules.
 */
const endpointSchema = z
  .object({
    driver: z
      .string({ error: 'expected the driver kind as a string, such as "file", "xen" or "hyperv"' })
      .regex(/^[a-z][a-z0-9-]*$/, 'a driver kind is lower-case letters, digits and dashes'),
  })
  .loose();

const optionsSchema = z
  .object({
    replicationCache: z.boolean().default(false),
    singlePass: z.boolean().default(false),
    direction: z.enum(['push', 'pull']).default('push'),
    ...scheduleOptionFields,
    retention: z.number().int().min(1).max(1000).default(3),
    strongDigests: z.boolean().default(false),
    bandwidthLimit: sizeOrRate.optional(),
    parallelDisks: z.number().int().min(1).max(64).default(2),
  })
  .strict();

const transportSchema = z
  .object({
    kind: z.enum(['inprocess', 'tcp', 'tls']).default('inprocess'),
  })
  .loose();

const blockSizeSchema = z
  .union([z.number(), z.string()], { error: 'expected a block size in bytes or with a unit, such as 65536 or "64KiB"' })
  .transform((value, ctx) => {
    let bytes: number;
    try {
      bytes = parseRate(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message.replace(/^rate: /, '') });
      return z.NEVER;
    }
    if (bytes < 4096 || bytes > 16 * 1024 * 1024 || (bytes & (bytes - 1)) !== 0) {
      ctx.addIssue({ code: 'custom', message: `expected a power of two from 4 KiB to 16 MiB, got ${value}` });
      return z.NEVER;
    }
    return bytes;
  })
  .default(65536);

/** The zod schema of a job file. Exported so tools can derive JSON Schema or editors' hints. */
export const jobSpecSchema = z
  .object({
    name: z.string().regex(namePattern, `a job name is ${nameRule}`),
    source: endpointSchema.extend({ vm: z.string().min(1, 'name the source VM') }),
    target: endpointSchema.extend({
      replicaName: z.string().regex(namePattern, `a replica name is ${nameRule}`).optional(),
    }),
    method: z.string().regex(/^[a-z][a-z0-9-]*$/, 'expected a method such as "qhybrid", "abd", "cbt" or "xva"'),
    blockSize: blockSizeSchema,
    options: optionsSchema.default(() => optionsSchema.parse({})),
    transport: transportSchema.default(() => transportSchema.parse({})),
  })
  .strict()
  .superRefine((job, ctx) => {
    // a file-driver VM or replica name becomes a folder under the driver's root
    if (job.source.driver === 'file' && pathLike(job.source.vm)) {
      ctx.addIssue({
        code: 'custom',
        path: ['source', 'vm'],
        message: `a file-driver VM name is ${FOLDER_RULE}, got ${JSON.stringify(job.source.vm)}`,
      });
    } else if (job.source.vm.includes('\u0000')) {
      ctx.addIssue({ code: 'custom', path: ['source', 'vm'], message: 'a VM name cannot hold a NUL character' });
    }
    const replicaName = job.target.replicaName;
    if (job.target.driver === 'file' && replicaName !== undefined && pathLike(replicaName)) {
      ctx.addIssue({
        code: 'custom',
        path: ['target', 'replicaName'],
        message: `a file-driver replica name is ${FOLDER_RULE}, got ${JSON.stringify(replicaName)}`,
      });
    }
  });

/** A job as written in a file (defaults not yet applied). */
export type JobSpecInput = z.input<typeof jobSpecSchema>;

/**
 * A validated job with every default applied: keep replica `target` of VM `source.vm` up to date
 * with `method`.
 */
export type JobSpec = z.output<typeof jobSpecSchema>;

/**
 * The driver-facing part of a job: `{ driver, … }` plus the driver's own fields, which core does
 * not know (the driver's options schema checks them).
 */
export type EndpointSpec = JobSpec['source'] | JobSpec['target'];

/**
 * The fields of a job's side that core owns; the others are the driver's options. `vm` belongs to
 * the source side, `replicaName` to the target side.
 */
export const CORE_ENDPOINT_FIELDS = {
  source: ['driver', 'vm'],
  target: ['driver', 'replicaName'],
} as const satisfies Record<'source' | 'target', readonly string[]>;

/** The resolved `options` section of a job. */
export type JobOptions = JobSpec['options'];

/** Longest folder name the file driver takes (its `MAX_NAME_LENGTH`). */
const FILE_NAME_LIMIT = 200;

/**
 * The name the replica gets when the job does not set `target.replicaName`: `<vm>-replica`. On a
 * file target that name is a folder; when the source VM's name cannot be one (a Xen or Hyper-V
 * name may hold `/`, a line break, or 300 characters), the folder is the name with each such
 * character made `_`, cut to fit, plus 8 hex digits of its SHA-256 so that two such VMs never
 * share a replica.
 */
export function replicaNameOf(job: JobSpec): string {
  if (job.target.replicaName !== undefined) return job.target.replicaName;
  const plain = `${job.source.vm}-replica`;
  const fits = plain.length <= FILE_NAME_LIMIT && Buffer.byteLength(plain) <= 255;
  if (job.target.driver !== 'file' || (!pathLike(plain) && fits)) return plain;
  const tag = createHash('sha256').update(job.source.vm).digest('hex').slice(0, 8);
  const safe = job.source.vm
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is replaced
    .replace(/[/\\\u0000-\u001f\u007f]/g, '_')
    .replace(/\.\./g, '__')
    .replace(/^\./, '_');
  // whole characters, at most 160 bytes of UTF-8: a file name has 255 bytes on most file systems
  let cut = '';
  for (const character of safe) {
    if (Buffer.byteLength(cut + character) > 160) break;
    cut += character;
  }
  return `${cut}-${tag}-replica`;
}
