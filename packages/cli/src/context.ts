import { resolve } from 'node:path';
import { FileStateStore, ReplicationEngine } from '@replikit/core';
import { registerBuiltinDrivers } from './drivers.js';

/** What a command gets from the process: streams, folders and the environment. */
export interface CliContext {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Cancelled on SIGINT/SIGTERM. */
  signal: AbortSignal;
}

/** The state folder: `--state-dir`, else `$REPLIKIT_STATE_DIR`, else `.replikit` in the working folder. */
export function stateDirOf(context: CliContext, flag: string | undefined): string {
  return resolve(context.cwd, flag ?? context.env.REPLIKIT_STATE_DIR ?? '.replikit');
}

/** An engine with the built-in drivers and a file state store. */
export function createEngine(stateDir: string): ReplicationEngine {
  registerBuiltinDrivers();
  return new ReplicationEngine({ stateStore: new FileStateStore(stateDir) });
}
