import { BUILTIN_DRIVER_KINDS, type Capabilities, defineDriver, InputError } from '@replikit/core';
import { HYPERV_DRIVER_KIND, HyperVDriver, type HyperVDriverInit } from './hyperv-driver.js';
import { type HyperVDriverOptions, hypervDriverOptionsSchema } from './hyperv-options.js';
import { PowerShellLink } from './powershell/powershell-link.js';

/** The `hyperv` row of core's kind table: what a job with `driver: hyperv` is judged against offline. */
export const HYPERV_KIND_CAPABILITIES: Capabilities = BUILTIN_DRIVER_KINDS.get(HYPERV_DRIVER_KIND)!;

/**
 * Starts the host's PowerShell (through node-powershell) and returns a {@link HyperVDriver}.
 * `tuning.openImage` replaces the local VHDX opener (tests count what is read).
 *
 * @throws `E_INPUT` for what is not built yet: a remoting host.
 */
export async function createHyperVDriver(
  options: HyperVDriverOptions,
  tuning: Pick<HyperVDriverInit, 'openImage'> & { side?: string | undefined } = {},
): Promise<HyperVDriver> {
  if (options.host !== 'local') {
    throw new InputError(
      `the hyperv driver reaches hosts through PowerShell remoting in a later version; run replikit on '${options.host.computerName}' with host: local`,
    );
  }
  const link = new PowerShellLink({
    executable: options.pwsh ?? (process.platform === 'win32' ? 'powershell' : 'pwsh'),
    timeoutMs: options.callTimeoutMs,
  });
  return new HyperVDriver({
    link,
    rct: options.rct,
    target: {
      replicaPath: options.replicaPath,
      networkMap: options.networkMap,
      secureBootTemplate: options.secureBootTemplate,
    },
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
