import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { InputError } from '@replikit/core';

/** Bytes per entry of a block table: a sha256 address, all zeros for an all-zero block. */
export const ADDRESS_BYTES = 32;

const SAFE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

/** Checks a name used as a path segment of the store. */
export function safeSegment(name: string, what: string): string {
  if (!SAFE.test(name) || name.includes('..'))
    throw new InputError(`${what} '${name}' cannot be used in the block store`);
  return name;
}

/** A file name for a disk id (ids may be paths on some platforms). */
export function diskFileName(diskId: string): string {
  return /^[A-Za-z0-9_-]{1,100}$/.test(diskId)
    ? `${diskId}.idx`
    : `disk-${createHash('sha256').update(diskId).digest('hex').slice(0, 32)}.idx`;
}

/** Where everything of a store lives. */
export function storePaths(dir: string) {
  return {
    chunks: join(dir, 'chunks'),
    /** Pack files (`p-<time>-<pid>-<random>.pack`) and their index files (`<pack>.idx`). */
    packs: join(dir, 'packs'),
    versions: join(dir, 'versions'),
    pending: join(dir, 'pending'),
    gcLock: join(dir, 'gc.lock'),
    /** `chunks/ab/cd/<address>`: two levels of 256 folders keep every folder small. */
    chunk(address: string): string {
      return join(dir, 'chunks', address.slice(0, 2), address.slice(2, 4), address);
    },
    versionJson(vm: string, id: string): string {
      return join(dir, 'versions', safeSegment(vm, 'VM'), `${safeSegment(id, 'version')}.json`);
    },
    versionData(vm: string, id: string): string {
      return join(dir, 'versions', safeSegment(vm, 'VM'), `${safeSegment(id, 'version')}.d`);
    },
    pendingDir(vm: string, runId: string): string {
      return join(dir, 'pending', safeSegment(vm, 'VM'), safeSegment(runId, 'run id'));
    },
  };
}
