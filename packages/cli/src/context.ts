import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';

/** What a command gets from the process: streams, folders and the environment. */
export interface CliContext {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Cancelled on SIGINT/SIGTERM (a run is rolled back), except where {@link stop} is aborted instead. */
  signal: AbortSignal;
  /**
   * Aborted instead of {@link signal} on SIGTERM of `run` and `resume` and on SIGINT/SIGTERM of
   * `daemon` (see `checkpointsOn`): a run stops at a checkpoint, unfinished and resumable.
   */
  stop?: AbortSignal;
  /**
   * True in the `replikit` process itself (not when `main` runs inside another program): the
   * commands that run the engine through `withProgress` (`run`, `resume`, `failover`, the demos) then
   * leave the file driver's background removals to a detached process, so that the command ends
   * when its runs do (see `removal-handoff.ts`). The daemon, long-lived, removes them itself.
   */
  oneShot?: boolean;
}

/**
 * The state folder: `--state-dir`, else `$REPLIKIT_STATE_DIR`, else `$XDG_STATE_HOME/replikit`,
 * else `~/.local/state/replikit`. One per user, whatever the working folder: a shell and cron
 * journal the same runs (and see each other's unfinished ones).
 */
export function stateDirOf(context: CliContext, flag: string | undefined): string {
  const env = context.env;
  const given = flag ?? (env.REPLIKIT_STATE_DIR || undefined);
  if (given !== undefined) return resolve(context.cwd, given);
  if (env.XDG_STATE_HOME && isAbsolute(env.XDG_STATE_HOME)) return join(env.XDG_STATE_HOME, 'replikit');
  return join(env.HOME || homedir(), '.local', 'state', 'replikit');
}
