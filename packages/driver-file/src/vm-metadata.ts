import type { Stats } from 'node:fs';
import { type FileHandle, lstat, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type DiskRef,
  FormatError,
  InputError,
  NotFoundError,
  type PowerState,
  toStorageError,
  type VMInfo,
} from '@replikit/core';
import { writeJsonAtomic } from './atomic-write.js';
import { linkError, openDataFile, READ } from './data-file.js';
import { assertSafeName } from './names.js';
import { VM_JSON } from './paths.js';
import { assertRawImage } from './raw-image-check.js';

/** One disk in `vm.json`. */
export interface VmDiskJson {
  /** Disk id, unique in the VM; a safe single path segment. */
  id: string;
  /** Raw image file in the VM folder; a safe single path segment. */
  file: string;
  /** Virtual size in bytes: the image file must be exactly this long. */
  size: number;
  /** Human-readable name. */
  label?: string;
}

/** The `replica` section of `vm.json`, present only on replicas. */
export interface ReplicaJson {
  /** `in-progress` while a run writes the replica (it then refuses to start), `ready` otherwise. */
  state: 'in-progress' | 'ready';
  /** Incremented by every commit and every revert. Part of the fingerprint. */
  writeGeneration: number;
  /** Id of the source VM. */
  sourceVm: string;
  /**
   * The highest lease epoch a fenced claim, commit or revert has carried (`TargetFence`): one
   * with a lower epoch is refused with `E_LEASE_LOST`. Absent until the first fenced operation.
   */
  fenceEpoch?: number;
  /**
   * Present while the replica is failed over: `promoting` (a promotion is under way: runs are
   * refused, the VM is not started yet), `promoted` (started; undo possible) or `committed`.
   */
  failover?: ReplicaFailoverJson;
}

/** The `replica.failover` section of `vm.json`. */
export interface ReplicaFailoverJson {
  /** See {@link ReplicaJson.failover}. */
  state: 'promoting' | 'promoted' | 'committed';
  /** The restore point the replica was promoted from. */
  pointId: string;
}

/** The `clone` section of `vm.json`: the VM is a disposable clone of a replica's restore point. */
export interface CloneJson {
  /** The replica it was cloned from. */
  replicaId: string;
  /** The restore point it holds. */
  pointId: string;
  /** The operation that made it. */
  operationId: string;
  /** ISO 8601 creation time. */
  createdAt: string;
}

/** The content of a VM folder's `vm.json`. */
export interface VmJson {
  /** Display name. */
  name: string;
  /** Number of virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Networks the VM is attached to. */
  networks?: string[];
  /** Disks in boot order. */
  disks: VmDiskJson[];
  /** Simulated power state. */
  powerState: PowerState;
  /** Number of simulated boots (`power(id, 'start')`). Part of the fingerprint. */
  bootCount: number;
  /** Present on replicas only. */
  replica?: ReplicaJson;
  /** Present on disposable clones only. */
  clone?: CloneJson;
  /**
   * Changed-block tracking: every disk keeps a dirty bitmap `<image>.cbt`, so snapshots copy only
   * what changed and the driver's change tracker reports it. Never set on replicas.
   */
  changeTracking?: boolean;
}

const POWER_STATES: readonly string[] = ['running', 'stopped', 'paused', 'unknown'];
/** File names a disk image may not take: they belong to the driver. */
const RESERVED_FILES = new Set([
  VM_JSON,
  'restore-points.json',
  'commit.json',
  'revert.json',
  'owner.json',
  'snapshots',
  'undo',
  'failover-base',
]);
const RESERVED_SUFFIXES = ['.overlay', '.overlay-run', '.lock', '.tmp', '.undo', '.alloc', '.cbt'];

/**
 * Parses and validates the text of a `vm.json`.
 *
 * @param text - The file's content.
 * @param file - The file's path, named in error messages.
 * @throws {@link @replikit/core!FormatError} naming the field and the file when a field is missing or malformed.
 * @throws {@link @replikit/core!InputError} when a disk id or file name is not a safe single path segment.
 */
export function parseVmJson(text: string, file: string): VmJson {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new FormatError(`${file} is not valid JSON (${(error as Error).message}); fix it or recreate the VM`, {
      cause: error,
      details: { file },
    });
  }
  const bad = (field: string, expected: string, got: unknown): never => {
    throw new FormatError(
      `${file}: field "${field}" must be ${expected}, got ${preview(got)}; fix the file or recreate the VM`,
      { details: { file, field } },
    );
  };
  if (!isRecord(raw)) return bad('(root)', 'an object', raw);
  const name = raw.name;
  if (typeof name !== 'string' || name.length === 0 || name.includes('\0')) bad('name', 'a non-empty string', name);
  const cpus = raw.cpus;
  if (!isCount(cpus) || cpus === 0) bad('cpus', 'a whole number ≥ 1', cpus);
  const memoryMiB = raw.memoryMiB;
  if (!isCount(memoryMiB) || memoryMiB === 0) bad('memoryMiB', 'a whole number ≥ 1', memoryMiB);
  let networks: string[] | undefined;
  if (raw.networks !== undefined) {
    if (!Array.isArray(raw.networks) || !raw.networks.every((n) => typeof n === 'string')) {
      bad('networks', 'an array of strings', raw.networks);
    }
    networks = [...(raw.networks as string[])];
  }
  if (!Array.isArray(raw.disks)) bad('disks', 'an array', raw.disks);
  const ids = new Set<string>();
  const files = new Set<string>();
  const disks = (raw.disks as unknown[]).map((d, i): VmDiskJson => {
    const at = `disks[${i}]`;
    if (!isRecord(d)) return bad(at, 'an object', d);
    const id = safeField(d.id, `${at}.id`, file);
    const diskFile = safeField(d.file, `${at}.file`, file);
    if (RESERVED_FILES.has(diskFile) || RESERVED_SUFFIXES.some((s) => diskFile.endsWith(s))) {
      throw new InputError(
        `${file}: field "${at}.file" names ${JSON.stringify(diskFile)}, a file the driver reserves`,
        {
          details: { file, field: `${at}.file` },
        },
      );
    }
    if (ids.has(id)) bad(`${at}.id`, 'unique among the disks', id);
    if (files.has(diskFile)) bad(`${at}.file`, 'unique among the disks', diskFile);
    ids.add(id);
    files.add(diskFile);
    if (!isCount(d.size)) bad(`${at}.size`, 'a whole number of bytes ≥ 0', d.size);
    if (d.label !== undefined && typeof d.label !== 'string') bad(`${at}.label`, 'a string', d.label);
    return {
      id,
      file: diskFile,
      size: d.size as number,
      ...(d.label === undefined ? {} : { label: d.label as string }),
    };
  });
  const powerState = raw.powerState;
  if (typeof powerState !== 'string' || !POWER_STATES.includes(powerState)) {
    bad('powerState', `one of ${POWER_STATES.join(', ')}`, powerState);
  }
  const bootCount = raw.bootCount;
  if (!isCount(bootCount)) bad('bootCount', 'a whole number ≥ 0', bootCount);
  let replica: ReplicaJson | undefined;
  if (raw.replica !== undefined) {
    const r = raw.replica;
    if (!isRecord(r)) return bad('replica', 'an object', r);
    if (r.state !== 'in-progress' && r.state !== 'ready') bad('replica.state', "'in-progress' or 'ready'", r.state);
    if (!isCount(r.writeGeneration)) bad('replica.writeGeneration', 'a whole number ≥ 0', r.writeGeneration);
    if (typeof r.sourceVm !== 'string') bad('replica.sourceVm', 'a string', r.sourceVm);
    if (r.fenceEpoch !== undefined && !isCount(r.fenceEpoch))
      bad('replica.fenceEpoch', 'a whole number ≥ 0', r.fenceEpoch);
    let failover: ReplicaFailoverJson | undefined;
    if (r.failover !== undefined) {
      const f = r.failover;
      if (!isRecord(f)) return bad('replica.failover', 'an object', f);
      if (f.state !== 'promoting' && f.state !== 'promoted' && f.state !== 'committed') {
        bad('replica.failover.state', "'promoting', 'promoted' or 'committed'", f.state);
      }
      failover = {
        state: f.state as ReplicaFailoverJson['state'],
        pointId: safeField(f.pointId, 'replica.failover.pointId', file),
      };
    }
    replica = {
      state: r.state as ReplicaJson['state'],
      writeGeneration: r.writeGeneration as number,
      sourceVm: r.sourceVm as string,
      ...(r.fenceEpoch === undefined ? {} : { fenceEpoch: r.fenceEpoch as number }),
      ...(failover ? { failover } : {}),
    };
  }
  let clone: CloneJson | undefined;
  if (raw.clone !== undefined) {
    const c = raw.clone;
    if (!isRecord(c)) return bad('clone', 'an object', c);
    for (const field of ['replicaId', 'pointId', 'operationId', 'createdAt'] as const) {
      if (typeof c[field] !== 'string') bad(`clone.${field}`, 'a string', c[field]);
    }
    clone = {
      replicaId: c.replicaId as string,
      pointId: c.pointId as string,
      operationId: c.operationId as string,
      createdAt: c.createdAt as string,
    };
  }
  const changeTracking = raw.changeTracking;
  if (changeTracking !== undefined && typeof changeTracking !== 'boolean') {
    bad('changeTracking', 'true or false', changeTracking);
  }
  if (changeTracking === true && replica) bad('changeTracking', 'absent on a replica', changeTracking);
  return {
    name: name as string,
    cpus: cpus as number,
    memoryMiB: memoryMiB as number,
    ...(networks ? { networks } : {}),
    disks,
    powerState: powerState as PowerState,
    bootCount: bootCount as number,
    ...(replica ? { replica } : {}),
    ...(clone ? { clone } : {}),
    ...(changeTracking ? { changeTracking: true } : {}),
  };
}

/**
 * Reads and validates `<dir>/vm.json`.
 *
 * @throws {@link @replikit/core!NotFoundError} naming the path when the folder or its vm.json does not exist.
 * @throws {@link @replikit/core!FormatError} / {@link @replikit/core!InputError} as {@link parseVmJson}.
 */
export async function readVmJson(dir: string): Promise<VmJson> {
  const file = join(dir, VM_JSON);
  let text: string;
  let fh: FileHandle | undefined;
  try {
    fh = await openDataFile(file, READ, { what: 'the VM metadata' });
    text = await fh.readFile('utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      const folderExists = await stat(dir).then(
        (s) => s.isDirectory(),
        () => false,
      );
      throw new NotFoundError(
        folderExists
          ? `the folder ${dir} holds no vm.json, so it is not a VM; create the VM with createFileVM or check the name`
          : `no VM folder at ${dir}; check the VM name and the driver's root folder`,
        { cause: error, details: { path: folderExists ? file : dir } },
      );
    }
    throw toStorageError(error, `reading ${file}`);
  } finally {
    await fh?.close().catch(() => undefined);
  }
  return parseVmJson(text, file);
}

/** Writes `<dir>/vm.json` atomically (temporary file, fsync, rename, fsync of the folder). */
export async function writeVmJson(dir: string, vm: VmJson): Promise<void> {
  await writeJsonAtomic(join(dir, VM_JSON), vm);
}

/**
 * Checks that every disk image of the VM exists, is a regular file (not a symbolic link) exactly as
 * long as vm.json declares and, for a source VM (not a replica), is a raw image (see
 * {@link assertRawImage}).
 *
 * @throws {@link @replikit/core!FormatError} whose one-line message names the disk, the file, the actual and the
 * declared sizes and says how to fix it, for a short, long or missing image.
 */
export async function checkDiskImages(dir: string, vm: VmJson): Promise<void> {
  for (const disk of vm.disks) {
    await checkImageSize(join(dir, disk.file), disk.id, disk.size);
    if (!vm.replica) await assertRawImage(join(dir, disk.file), disk.id);
  }
}

/**
 * Checks that the image `path` of disk `diskId` is a regular file (a symbolic link is refused, not
 * followed) exactly `declared` bytes long.
 *
 * @returns The file's stats.
 * @throws {@link @replikit/core!FormatError} when it is missing, a link, not a file, shorter or longer.
 */
export async function checkImageSize(path: string, diskId: string, declared: number): Promise<Stats> {
  let stats: Stats;
  try {
    stats = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FormatError(
        `disk '${diskId}': image ${path} is missing (vm.json declares ${declared} bytes); restore the file or remove the disk from vm.json`,
        { cause: error, details: { diskId, path, declared } },
      );
    }
    throw toStorageError(error, `reading the size of ${path}`);
  }
  if (stats.isSymbolicLink()) throw linkError(path, `disk '${diskId}'`);
  if (!stats.isFile()) {
    throw new FormatError(`disk '${diskId}': ${path} is not a regular file; replace it with a raw image`, {
      details: { diskId, path },
    });
  }
  if (stats.size !== declared) {
    const shorter = stats.size < declared;
    throw new FormatError(
      `disk '${diskId}': image ${path} is ${stats.size} bytes, ${shorter ? 'shorter' : 'longer'} than the ${declared} bytes ` +
        `declared in vm.json; ${shorter ? 'restore the image from a copy or extend it' : 'truncate the image'} to ${declared} bytes ` +
        `(truncate -s ${declared} <file>) or set the disk's "size" to ${stats.size} if the image is right`,
      { details: { diskId, path, actual: stats.size, declared } },
    );
  }
  return stats;
}

function safeField(value: unknown, field: string, file: string): string {
  try {
    return assertSafeName(value, `${file}: field "${field}"`);
  } catch (error) {
    if (error instanceof InputError) throw new InputError(error.message, { details: { file, field } });
    throw error;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function preview(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

/**
 * The public {@link VMInfo} of the VM folder `id` holding `vm`. When `root` is given (a replica
 * placed outside the driver's root), each disk's `meta.root` carries it so the driver finds it again.
 */
export function toVMInfo(id: string, vm: VmJson, root?: string): VMInfo {
  return {
    id,
    name: vm.name,
    cpus: vm.cpus,
    memoryMiB: vm.memoryMiB,
    powerState: vm.powerState,
    disks: vm.disks.map(
      (d): DiskRef => ({
        id: d.id,
        vmId: id,
        size: d.size,
        ...(d.label === undefined ? {} : { label: d.label }),
        ...(root === undefined ? {} : { meta: { root } }),
      }),
    ),
    ...(vm.networks ? { networks: [...vm.networks] } : {}),
  };
}
