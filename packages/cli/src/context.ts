import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { FileStateStore, ReplicationEngine } from '@replikit/core';
import { createHashingPool, FileCacheProvider } from '@replikit/dedup';
import { blockStoreOf } from './commands/backup.js';
import { registerBuiltinDrivers } from './drivers.js';
import { cliTargetDriver, cliTransport } from './transport-option.js';

/** What a command gets from the process: streams, folders and the environment. */
export interface CliContext {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Cancelled on SIGINT/SIGTERM. */
  signal: AbortSignal;
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

/**
 * An engine with the built-in drivers, a file state store, xxh128 digests hashed on every core,
 * replication caches in `<stateDir>/cache` (jobs with `options.replicationCache`) and the block
 * store in `<stateDir>/store` (jobs with `options.singlePass`; encrypted with the key file
 * `env.REPLIKIT_STORE_KEY_FILE` names, if any).
 */
export function createEngine(stateDir: string, env: NodeJS.ProcessEnv = process.env): ReplicationEngine {
  registerBuiltinDrivers();
  return new ReplicationEngine({
    stateStore: new FileStateStore(stateDir),
    digest: 'xxh128',
    hasher: (algorithm) => createHashingPool({ algorithm }),
    cache: new FileCacheProvider(join(stateDir, 'cache')),
    backup: blockStoreOf(stateDir, env), // encrypted when $REPLIKIT_STORE_KEY_FILE names a key file
    // A job's `transport` section: in-process, or TCP/TLS to a replikit-agent. Key files of a job
    // file are already absolute (loadJobForCli); other relative paths are taken from the working folder.
    transport: cliTransport({ base: process.cwd(), env }),
    // With a network transport section the agent hosts the replica: the target driver is its proxy.
    targetDriver: cliTargetDriver({ base: process.cwd(), env }),
  });
}
