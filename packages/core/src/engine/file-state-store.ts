import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConflictError, FormatError, InputError, toStorageError } from '../errors.js';
import type { ScheduleRequest, ScheduleState } from '../schedule/schedule-state.js';
import { fsyncDirectory, writeFileAtomic } from '../util/atomic-file.js';
import { isProcessAlive } from '../util/process-alive.js';
import { toJournal } from './journal-format.js';
import type { RunJournal } from './run-journal.js';
import type { JobRecord, RunRecord } from './run-record.js';
import { isTerminal } from './run-state.js';
import type { StateStore } from './state-store.js';

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/;

function checkId(id: string, what: string): string {
  if (!SAFE_ID.test(id) || id.includes('..')) {
    throw new InputError(`${what} '${id}' is not valid: use letters, digits, dots, dashes and underscores`);
  }
  return id;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw toStorageError(error, `reading ${path}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new FormatError(`${path} is not valid JSON; the state store is damaged (remove the file to forget it)`, {
      cause: error,
    });
  }
}

function byStart(a: RunJournal, b: RunJournal): number {
  return a.startedAt.localeCompare(b.startedAt) || a.runId.localeCompare(b.runId);
}

function oldest(records: RunJournal[]): RunJournal | undefined {
  return records.sort(byStart)[0];
}

/**
 * The default {@link StateStore}: JSON files in a folder, each replaced atomically (temp file,
 * fsync, rename). Layout: `runs/<runId>.json`, `jobs/<job>.json`, `locks/<job>.lock`, and
 * `unfinished/<runId>`: an empty marker per run that has not ended, so that a run's start finds
 * an unfinished run of its job without reading every run record ({@link findUnfinished}).
 *
 * The markers are crash-safe: a run's marker is created (and its folder fsynced) before its first
 * record is written, and removed only after its final record is; a marker left by a crash between
 * the two names a run that has ended, which the look-up sees and removes. A store written by a
 * version without markers is indexed once, by reading every record, on its first look-up
 * (`unfinished/.indexed` says it was).
 */
export class FileStateStore implements StateStore {
  /** The store's folder. */
  readonly dir: string;

  /** @param dir - the folder; created on first write. */
  constructor(dir: string) {
    this.dir = dir;
  }

  /** The store's folder, absolute. */
  get location(): string {
    return resolve(this.dir);
  }

  private async ensure(sub: string): Promise<string> {
    const path = join(this.dir, sub);
    try {
      await mkdir(path, { recursive: true });
    } catch (error) {
      throw toStorageError(error, `creating the state folder ${path}`);
    }
    return path;
  }

  async saveRun(record: RunJournal): Promise<void> {
    const dir = await this.ensure('runs');
    const id = checkId(record.runId, 'run id');
    const ended = isTerminal(record.state);
    if (!ended && !this.marked.has(id)) await this.mark([id]);
    await writeFileAtomic(join(dir, `${id}.json`), `${JSON.stringify(record, null, 2)}\n`);
    if (ended) await this.unmark(id);
  }

  /** Run ids whose marker this instance has made durable (so each run's marker costs one fsync). */
  private readonly marked = new Set<string>();

  /** Creates the markers of `ids` and fsyncs their folder. */
  private async mark(ids: string[]): Promise<void> {
    const dir = await this.ensure('unfinished');
    try {
      for (const id of ids) await (await open(join(dir, id), 'a')).close();
    } catch (error) {
      throw toStorageError(error, `marking a run unfinished in ${dir}`);
    }
    await fsyncDirectory(dir);
    for (const id of ids) this.marked.add(id);
  }

  private async unmark(id: string): Promise<void> {
    this.marked.delete(id);
    await rm(join(this.dir, 'unfinished', id), { force: true }).catch((error: unknown) => {
      throw toStorageError(error, `removing the unfinished marker of run ${id}`);
    });
  }

  /**
   * The oldest run of job `name` that has not ended (its state is not terminal), or undefined. It
   * reads the records of unfinished runs only, not every run's: a run's start costs the same after
   * thousands of runs.
   */
  async findUnfinished(name: string): Promise<RunJournal | undefined> {
    const dir = join(this.dir, 'unfinished');
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw toStorageError(error, `listing ${dir}`);
      names = [];
    }
    if (!names.includes('.indexed')) return this.index(name);
    const found: RunJournal[] = [];
    for (const id of names.filter((n) => !n.startsWith('.'))) {
      const record = SAFE_ID.test(id) ? await this.loadRun(id) : undefined;
      if (!record || isTerminal(record.state)) await rm(join(dir, id), { force: true });
      else if (record.job.name === name) found.push(record);
    }
    return oldest(found);
  }

  /** Indexes a store without markers (an older version's): every record is read, once. */
  private async index(name: string): Promise<RunJournal | undefined> {
    const open = (await this.listRuns()).filter((r) => !isTerminal(r.state));
    await this.mark(open.map((r) => r.runId));
    await writeFileAtomic(join(this.dir, 'unfinished', '.indexed'), '1\n');
    return oldest(open.filter((r) => r.job.name === name));
  }

  /** Loads a run's journal; one an earlier version saved flat is returned as a journal of this version. */
  async loadRun(runId: string): Promise<RunJournal | undefined> {
    const stored = await readJson<RunJournal | RunRecord>(join(this.dir, 'runs', `${checkId(runId, 'run id')}.json`));
    return stored && toJournal(stored);
  }

  async listRuns(): Promise<RunJournal[]> {
    let names: string[];
    try {
      names = await readdir(join(this.dir, 'runs'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw toStorageError(error, `listing ${join(this.dir, 'runs')}`);
    }
    const records: RunJournal[] = [];
    for (const name of names.filter((n) => n.endsWith('.json') && !n.startsWith('.'))) {
      const record = await readJson<RunJournal | RunRecord>(join(this.dir, 'runs', name));
      if (record) records.push(toJournal(record));
    }
    return records.sort(byStart);
  }

  async saveJob(record: JobRecord): Promise<void> {
    const dir = await this.ensure('jobs');
    await writeFileAtomic(
      join(dir, `${checkId(record.name, 'job name')}.json`),
      `${JSON.stringify(record, null, 2)}\n`,
    );
  }

  async loadJob(name: string): Promise<JobRecord | undefined> {
    return readJson<JobRecord>(join(this.dir, 'jobs', `${checkId(name, 'job name')}.json`));
  }

  async saveSchedule(state: ScheduleState): Promise<void> {
    const dir = await this.ensure('schedules');
    await writeFileAtomic(join(dir, `${checkId(state.job, 'job name')}.json`), `${JSON.stringify(state, null, 2)}\n`);
  }

  async loadSchedule(name: string): Promise<ScheduleState | undefined> {
    return readJson<ScheduleState>(join(this.dir, 'schedules', `${checkId(name, 'job name')}.json`));
  }

  async listSchedules(): Promise<ScheduleState[]> {
    let names: string[];
    try {
      names = await readdir(join(this.dir, 'schedules'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw toStorageError(error, `listing ${join(this.dir, 'schedules')}`);
    }
    const states: ScheduleState[] = [];
    for (const name of names.filter((n) => n.endsWith('.json') && !n.startsWith('.')).sort()) {
      const state = await readJson<ScheduleState>(join(this.dir, 'schedules', name));
      if (state) states.push(state);
    }
    return states;
  }

  async saveScheduleRequest(request: ScheduleRequest): Promise<void> {
    // Beside the schedule states, not among them: `listSchedules` lists only states.
    const dir = await this.ensure('schedule-requests');
    await writeFileAtomic(
      join(dir, `${checkId(request.job, 'job name')}.json`),
      `${JSON.stringify(request, null, 2)}\n`,
    );
  }

  async loadScheduleRequest(name: string): Promise<ScheduleRequest | undefined> {
    return readJson<ScheduleRequest>(join(this.dir, 'schedule-requests', `${checkId(name, 'job name')}.json`));
  }

  async lockJob(name: string, runId: string): Promise<() => Promise<void>> {
    const dir = await this.ensure('locks');
    const path = join(dir, `${checkId(name, 'job name')}.lock`);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await open(path, 'wx');
        try {
          await handle.writeFile(JSON.stringify({ pid: process.pid, runId }));
          await handle.sync();
        } finally {
          await handle.close();
        }
        return async () => {
          await rm(path, { force: true });
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw toStorageError(error, `locking job ${name}`);
      }
      const holder = await readJson<{ pid: number; runId: string }>(path).catch(() => undefined);
      if (holder && isProcessAlive(holder.pid) && holder.pid !== process.pid) {
        throw new ConflictError(
          `job '${name}' is being run by process ${holder.pid} (run ${holder.runId}); wait for it to finish`,
          { details: { pid: holder.pid, runId: holder.runId } },
        );
      }
      if (holder && holder.pid === process.pid && holder.runId !== runId) {
        throw new ConflictError(`job '${name}' is already running in this process (run ${holder.runId})`, {
          details: { runId: holder.runId },
        });
      }
      await rm(path, { force: true });
    }
    throw new ConflictError(`could not lock job '${name}': another process keeps taking the lock`);
  }
}
