import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, InputError, toStorageError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import type { FailoverRecord } from './failover-record.js';

/** Where the failover engine journals each job's {@link FailoverRecord}; every save is atomic and durable. */
export interface FailoverStore {
  /** The job's record, or `undefined` when it was never failed over. */
  load(job: string): Promise<FailoverRecord | undefined>;
  /** Replaces the job's record. */
  save(record: FailoverRecord): Promise<void>;
}

const SAFE_JOB = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

/**
 * A {@link FailoverStore} in a folder: `<dir>/failover/<job>.json`, written through a temporary
 * file, fsync and rename. Use the run state folder, so that `replikit status` finds both.
 */
export class FileFailoverStore implements FailoverStore {
  /** @param dir - the state folder (the same as the runs'). */
  constructor(readonly dir: string) {}

  private path(job: string): string {
    if (!SAFE_JOB.test(job)) throw new InputError(`job name ${JSON.stringify(job)} cannot name a failover record`);
    return join(this.dir, 'failover', `${job}.json`);
  }

  async load(job: string): Promise<FailoverRecord | undefined> {
    const path = this.path(job);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw toStorageError(error, `reading ${path}`);
    }
    let parsed: FailoverRecord;
    try {
      parsed = JSON.parse(text) as FailoverRecord;
    } catch (error) {
      throw new FormatError(
        `${path} is not valid JSON; restore it or delete it (the replica's state is on the target)`,
        {
          cause: error,
          details: { file: path },
        },
      );
    }
    if (parsed?.version !== 1 || parsed.job !== job || !Array.isArray(parsed.history)) {
      throw new FormatError(`${path} is not a failover record of job '${job}'; restore it or delete it`, {
        details: { file: path },
      });
    }
    return parsed;
  }

  async save(record: FailoverRecord): Promise<void> {
    const path = this.path(record.job);
    try {
      await mkdir(join(this.dir, 'failover'), { recursive: true });
    } catch (error) {
      throw toStorageError(error, `creating ${join(this.dir, 'failover')}`);
    }
    await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`);
  }
}
