import { hostname } from 'node:os';
import { ConflictError, type ReplicaOwner } from '@replikit/core';
import type { ImageReader } from '@replikit/formats';
import type { PowerShellLink } from '../powershell/powershell-link.js';
import type { HyperVTarget } from '../target/hyperv-target.js';
import { claimOwner, releaseOwner } from '../target/replica-files.js';
import { LOCAL_TARGET_FILES } from '../target/target-files.js';

/** Called at the named steps of the failover hooks (crash tests only). */
export type HyperVFailoverFaultHook = (step: string) => void | Promise<void>;

/** What the failover hooks of the Hyper-V driver work with. */
export interface HyperVFailoverContext {
  link: PowerShellLink;
  target: HyperVTarget;
  /** Opens a VHDX of the host with its parents, for reading. */
  openImage: (path: string) => Promise<ImageReader>;
  faultHook?: HyperVFailoverFaultHook | undefined;
}

/** The pseudo-run that holds a replica while a failover hook changes it. */
export function failoverRunId(replicaId: string): string {
  return `failover-${replicaId}`;
}

/**
 * Runs `fn` while the replica folder `dir` is held by the failover pseudo-run (the same hold file
 * a run takes, created exclusively): no run claims the replica meanwhile, and a run that holds it
 * makes this reject with `E_CONFLICT`. A hold a crashed failover hook left is taken over.
 */
export async function withFailoverHold<T>(dir: string, replicaId: string, fn: () => Promise<T>): Promise<T> {
  const runId = failoverRunId(replicaId);
  const owner: ReplicaOwner = { runId, host: hostname(), pid: process.pid, startedAt: new Date().toISOString() };
  const holder = await claimOwner(LOCAL_TARGET_FILES, dir, owner);
  if (holder.runId !== runId) {
    throw new ConflictError(
      `replica '${replicaId}' is held by run ${holder.runId} (host ${holder.host}, pid ${holder.pid}); finish, roll back or abandon that run ('replikit resume') before failing over`,
      { details: { owner: holder } },
    );
  }
  try {
    return await fn();
  } finally {
    await releaseOwner(LOCAL_TARGET_FILES, dir, runId);
  }
}

/** True when Hyper-V's state name says the VM is off (or saved, which does not run either). */
export function isOff(state: string): boolean {
  return /^(Off|Saved)/.test(state);
}
