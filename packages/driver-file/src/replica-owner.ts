import { randomBytes } from 'node:crypto';
import { link, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, type ReplicaOwner, toStorageError } from '@replikit/core';
import { fsyncDir, writeFileAtomic, writeJsonAtomic } from './atomic-write.js';
import { diskImagePath, type FileVmPaths, overlayPath } from './paths.js';

/** The owner record of a replica folder: the run that holds it (see `Hypervisor.claimReplica`). */
export const OWNER_FILE = 'owner.json';

/** Suffix of the file that names the run whose records a disk's overlay holds (`<image>.overlay-run`). */
export const OVERLAY_RUN_SUFFIX = '.overlay-run';

/** The owner record of the replica folder `paths.dir`. */
export function ownerPath(paths: FileVmPaths): string {
  return join(paths.dir, OWNER_FILE);
}

/** The file naming the run that wrote the pending records of a disk's overlay. */
export function overlayRunPath(dir: string, file: string): string {
  return `${diskImagePath(dir, file)}${OVERLAY_RUN_SUFFIX}`;
}

/**
 * Reads the owner record, or `undefined` when the replica is free.
 *
 * @throws {@link @replikit/core!FormatError} naming the file when it is malformed.
 */
export async function readOwner(paths: FileVmPaths): Promise<ReplicaOwner | undefined> {
  const file = ownerPath(paths);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw toStorageError(error, `reading ${file}`);
  }
  let parsed: Partial<ReplicaOwner> | undefined;
  try {
    parsed = JSON.parse(text) as Partial<ReplicaOwner>;
  } catch {
    parsed = undefined;
  }
  if (
    typeof parsed?.runId !== 'string' ||
    typeof parsed.host !== 'string' ||
    typeof parsed.pid !== 'number' ||
    typeof parsed.startedAt !== 'string' ||
    (parsed.stateDir !== undefined && typeof parsed.stateDir !== 'string')
  ) {
    throw new FormatError(
      `${file} is malformed; check that no run of this replica is still going, then delete the file`,
      { details: { file } },
    );
  }
  return {
    runId: parsed.runId,
    host: parsed.host,
    pid: parsed.pid,
    startedAt: parsed.startedAt,
    ...(parsed.stateDir === undefined ? {} : { stateDir: parsed.stateDir }),
  };
}

/**
 * Takes the owner record for `owner.runId`, atomically: the record is written whole into a
 * temporary file, then linked to its name, which fails when a record exists (two claims at once:
 * one link wins). A record of the same run is refreshed (atomic rename, best effort). Returns the
 * holder after the call.
 */
export async function takeOwner(paths: FileVmPaths, owner: ReplicaOwner): Promise<ReplicaOwner> {
  const file = ownerPath(paths);
  const record = {
    runId: String(owner.runId),
    host: String(owner.host),
    pid: Number(owner.pid),
    startedAt: String(owner.startedAt),
    ...(owner.stateDir === undefined ? {} : { stateDir: String(owner.stateDir) }),
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    const held = await readOwner(paths);
    if (held && held.runId !== record.runId) return held;
    if (held) {
      // The same run re-takes its hold. The refresh of its identity (a resumed run has a new pid)
      // is for messages only, and is skipped when nothing changed or it cannot be written: a
      // rollback must work on a full disk.
      if (held.pid !== record.pid || held.host !== record.host || held.stateDir !== record.stateDir) {
        await writeJsonAtomic(file, record).catch(() => undefined);
      }
      return record;
    }
    if (await linkNew(file, `${JSON.stringify(record, null, 2)}\n`)) {
      await fsyncDir(paths.dir);
      return record;
    }
    // Another claim won between the read and the link: read who.
  }
  return (await readOwner(paths)) ?? record;
}

/** Creates `path` with `text` unless it exists: true when created. Never leaves a partial file. */
async function linkNew(path: string, text: string): Promise<boolean> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw toStorageError(error, `writing ${path}`);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Removes the owner record when run `runId` holds it. */
export async function dropOwner(paths: FileVmPaths, runId: string): Promise<void> {
  const held = await readOwner(paths);
  if (held?.runId !== runId) return;
  await rm(ownerPath(paths), { force: true });
  await fsyncDir(paths.dir);
}

/** The run whose records the overlay of disk file `file` holds (`undefined`: a writer without one). */
export async function readOverlayRun(dir: string, file: string): Promise<string | undefined> {
  try {
    return (await readFile(overlayRunPath(dir, file), 'utf8')).trim() || undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw toStorageError(error, `reading ${overlayRunPath(dir, file)}`);
  }
}

/**
 * Names the run whose records the (empty) overlay of `file` receives from now on. Written before
 * the first record, so every record of the overlay is known to be that run's.
 */
export async function writeOverlayRun(dir: string, file: string, runId: string | undefined): Promise<void> {
  if ((await readOverlayRun(dir, file)) === runId) return;
  if (runId === undefined) {
    await rm(overlayRunPath(dir, file), { force: true });
    await fsyncDir(dir);
    return;
  }
  await writeFileAtomic(overlayRunPath(dir, file), `${runId}\n`);
}

/** Drops the pending overlay of `file` (the replica returns to its last restore point there). */
export async function dropOverlay(dir: string, file: string): Promise<void> {
  await rm(overlayPath(dir, file), { force: true });
  await fsyncDir(dir);
}
