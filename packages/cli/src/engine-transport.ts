import type { EngineOptions } from '@replikit/core';
import type { TransportContext, TransportSection } from './transport-option.js';

/**
 * The network side of the CLI (TLS and all), imported only for a job whose `transport` section
 * asks for TCP or TLS: a local run does not pay for loading it.
 */
function network() {
  return Promise.all([import('@replikit/transport'), import('./transport-option.js')]);
}

function isLocal(job: { transport?: unknown }): boolean {
  return (job.transport as TransportSection | undefined)?.kind === 'inprocess';
}

/**
 * The engine's `transport` option for the CLI: each run's transport from its job file; for a job
 * whose agent hosts the target side, the block transport of its remote target driver.
 */
export function cliTransport(context: TransportContext): NonNullable<EngineOptions['transport']> {
  return async (target, run, hasher) => {
    // A remote target only comes from a network section (cliTargetDriver), so a local one is in-process.
    if (isLocal(run.job)) {
      const { createInProcessTransport } = await import('@replikit/transport');
      return createInProcessTransport({ target, ...(hasher ? { hasher: () => hasher } : {}) });
    }
    const [transport, option] = await network();
    return transport.isRemoteTarget(target)
      ? target.transport
      : option.transportForJob(run.job, target, context, hasher);
  };
}

/** The engine's `targetDriver` option for the CLI: the agent's, for a job with a network transport section. */
export function cliTargetDriver(context: TransportContext): NonNullable<EngineOptions['targetDriver']> {
  return async (job) => {
    if (isLocal(job)) return undefined;
    const [, option] = await network();
    return option.remoteTargetForJob(job, context);
  };
}
