import { hostname } from 'node:os';
import type { ReplicaOwner } from '../contracts/hypervisor.js';
import { ConflictError } from '../errors.js';
import { isProcessAlive } from '../util/process-alive.js';
import type { RunJournal } from './run-journal.js';

/** The owner record a run puts on its replica: who it is and where it is journaled. */
export function ownerOfRun(
  record: Pick<RunJournal, 'runId' | 'startedAt'>,
  stateDir: string | undefined,
): ReplicaOwner {
  return {
    runId: record.runId,
    host: hostname(),
    pid: process.pid,
    ...(stateDir === undefined ? {} : { stateDir }),
    startedAt: record.startedAt,
  };
}

/**
 * Whether the process of a run still lives: `true` or `false` on this host, `undefined` for a
 * process on another host (it cannot be told from here).
 */
export function runIsAlive(pid: number, host: string | undefined): boolean | undefined {
  if (host !== undefined && host !== hostname()) return undefined;
  return isProcessAlive(pid);
}

/** The `replikit` command that works on run `runId` of the state folder `stateDir`. */
function command(runId: string, stateDir: string | undefined, flag = ''): string {
  const where = stateDir === undefined ? '' : ` --state-dir ${JSON.stringify(stateDir)}`;
  return `\`replikit${where} resume ${runId}${flag}\``;
}

/** What to do about a run that holds something, by whether its process lives. */
export function adviceFor(runId: string, pid: number, host: string | undefined, stateDir?: string): string {
  const alive = runIsAlive(pid, host);
  if (alive === true) return `it is running now (pid ${pid}); wait for it to finish or cancel it`;
  const next = `resume it with ${command(runId, stateDir)}, roll it back with ${command(runId, stateDir, ' --rollback')}, or abandon it with ${command(runId, stateDir, ' --abandon')}`;
  if (alive === false) return `its process is gone (it stopped before its end); ${next}`;
  return `it runs on another host, so whether it is still running cannot be told from here; wait for it, or on ${host} ${next}`;
}

/**
 * The error of a run that finds its replica held by another run: which run, where, what that
 * meant for this run (`consequence`), whether the holder's process lives, and what to do.
 */
export function heldByAnother(replicaName: string, holder: ReplicaOwner, consequence?: string): ConflictError {
  const where = `host ${holder.host}, pid ${holder.pid}, state folder ${holder.stateDir ?? 'unknown'}`;
  const so = consequence === undefined ? '' : `, so ${consequence}`;
  return new ConflictError(
    `replica '${replicaName}' is held by run ${holder.runId} (${where}), started ${holder.startedAt}${so}; ${adviceFor(holder.runId, holder.pid, holder.host, holder.stateDir)}`,
    { details: { owner: holder, alive: runIsAlive(holder.pid, holder.host) ?? null } },
  );
}
