import { BUILTIN_DRIVER_KINDS, type Capabilities, defineDriver } from '@replikit/core';
import { XenConnection, type XenConnectionOptions } from './xapi/xen-connection.js';
import { XEN_DRIVER_KIND, XenDriver, type XenDriverInit } from './xen-driver.js';
import { type XenDriverOptions, xenDriverOptionsSchema } from './xen-options.js';

/** The `xen` row of core's kind table: what a job with `driver: xen` is judged against offline. */
export const XEN_KIND_CAPABILITIES: Capabilities = BUILTIN_DRIVER_KINDS.get(XEN_DRIVER_KIND)!;

/**
 * Connects to the pool the options name and returns a {@link XenDriver}. `tuning` sets the
 * retry policy, gives a cancel signal for the login and a warning sink; `targetPreview` turns on
 * the replica hooks (see {@link XenDriverInit.targetPreview}).
 *
 * @throws `E_AUTH` when the credentials cannot be resolved, the login is refused or the pinned
 * certificate does not match.
 */
export async function createXenDriver(
  options: XenDriverOptions,
  tuning: Pick<XenConnectionOptions, 'retry' | 'signal' | 'onWarning'> & Pick<XenDriverInit, 'targetPreview'> = {},
): Promise<XenDriver> {
  const { targetPreview, ...connectionTuning } = tuning;
  const connection = await XenConnection.open({
    url: options.url,
    user: options.user,
    passwordEnv: options.passwordEnv,
    credentialsFile: options.credentialsFile,
    fingerprint: options.fingerprint,
    allowUnauthorized: options.allowUnauthorized,
    ...connectionTuning,
  });
  return new XenDriver(connection, {
    nbdConnections: options.nbdConnections,
    preferNbd: options.preferNbd,
    sr: options.sr,
    networkMap: options.networkMap,
    ...(tuning.onWarning ? { onWarning: tuning.onWarning } : {}),
    ...(targetPreview ? { targetPreview: true } : {}),
  });
}

/**
 * The Xen driver as a definition: register it once and name `driver: xen` in a job.
 *
 * @example
 * ```ts
 * import { registerDriver } from '@replikit/core';
 * import { xenDriver } from '@replikit/driver-xen';
 *
 * registerDriver(xenDriver);
 * // job: source: { driver: xen, url: https://xen1, passwordEnv: XEN_PASSWORD, fingerprint: "AB:…", vm: web }
 * ```
 */
export const xenDriver = defineDriver({
  kind: XEN_DRIVER_KIND,
  capabilities: XEN_KIND_CAPABILITIES,
  options: xenDriverOptionsSchema,
  // XVA moves whole VMs (exportVm/importVm) and needs no block writer: its replica hooks are on.
  create: (options, context) => createXenDriver(options, context.method === 'xva' ? { targetPreview: true } : {}),
});
