import { join } from 'node:path';
import { FileStateStore, ReplicationEngine, type StateStore } from '@replikit/core';
import { createHashingPool, FileCacheProvider } from '@replikit/dedup';
import { blockStoreOf } from './commands/backup.js';
import { registerBuiltinDrivers } from './drivers.js';
import { cliTargetDriver, cliTransport } from './engine-transport.js';

/**
 * An engine with the built-in drivers, a file state store, xxh128 digests hashed on every core,
 * replication caches in `<stateDir>/cache` (jobs with `options.replicationCache`) and the block
 * store in `<stateDir>/store` (jobs with `options.singlePass`; encrypted with the key file
 * `env.REPLIKIT_STORE_KEY_FILE` names, if any). `stateStore` replaces the file state store (a
 * shared PostgreSQL store: `replikit daemon --store postgres://…`).
 */
export function createEngine(
  stateDir: string,
  env: NodeJS.ProcessEnv = process.env,
  stateStore?: StateStore,
): ReplicationEngine {
  registerBuiltinDrivers();
  return new ReplicationEngine({
    stateStore: stateStore ?? new FileStateStore(stateDir),
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
