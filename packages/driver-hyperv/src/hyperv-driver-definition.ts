import { BUILTIN_DRIVER_KINDS, type Capabilities, defineDriver } from '@replikit/core';
import { agentHostFiles, remoteSessionTarget, type SecretSources } from './host-files/remote-host.js';
import { HYPERV_DRIVER_KIND, HyperVDriver, type HyperVDriverInit } from './hyperv-driver.js';
import { type HyperVDriverOptions, hypervDriverOptionsSchema } from './hyperv-options.js';
import { PowerShellLink } from './powershell/powershell-link.js';

/** The `hyperv` row of core's kind table: what a job with `driver: hyperv` is judged against offline. */
export const HYPERV_KIND_CAPABILITIES: Capabilities = BUILTIN_DRIVER_KINDS.get(HYPERV_DRIVER_KIND)!;

/**
 * Starts the host's PowerShell (through node-powershell) and returns a {@link HyperVDriver}.
 * `tuning.openImage` replaces the VHDX opener (tests count what is read).
 *
 * With a remoting `host`, the shell opens a PowerShell remoting session to it (the password read
 * from the environment variable or file the options name, from `tuning.env`, default
 * `process.env`), and the host's files are reached through its `replikit-agent --host-files`.
 *
 * @throws `E_INPUT` when the password or the agent key cannot be read.
 */
export async function createHyperVDriver(
  options: HyperVDriverOptions,
  tuning: Pick<HyperVDriverInit, 'openImage'> & { side?: string | undefined; env?: NodeJS.ProcessEnv } = {},
): Promise<HyperVDriver> {
  const sources: SecretSources = { env: tuning.env ?? process.env };
  const remote = options.host === 'local' ? undefined : await remoteSessionTarget(options.host, sources);
  const files = options.host === 'local' ? undefined : await agentHostFiles(options.host, sources);
  const link = new PowerShellLink({
    executable: options.pwsh ?? (process.platform === 'win32' ? 'powershell' : 'pwsh'),
    timeoutMs: options.callTimeoutMs,
    ...(remote ? { remote } : {}),
  });
  return new HyperVDriver({
    link,
    rct: options.rct,
    target: {
      replicaPath: options.replicaPath,
      networkMap: options.networkMap,
      secureBootTemplate: options.secureBootTemplate,
    },
    ...(files ? { files } : {}),
    ...(tuning.openImage ? { openImage: tuning.openImage } : {}),
  });
}

/**
 * The Hyper-V driver as a definition: register it once and name `driver: hyperv` in a job.
 *
 * @example
 * ```ts
 * import { registerDriver } from '@replikit/core';
 * import { hypervDriver } from '@replikit/driver-hyperv';
 *
 * registerDriver(hypervDriver);
 * // job: source: { driver: hyperv, vm: web }   (replikit runs on the Hyper-V host)
 * ```
 */
export const hypervDriver = defineDriver({
  kind: HYPERV_DRIVER_KIND,
  capabilities: HYPERV_KIND_CAPABILITIES,
  options: hypervDriverOptionsSchema,
  create: (options, context) => createHyperVDriver(options, { side: context.side }),
});
