import { BUILTIN_DRIVER_KINDS, type Capabilities, defineDriver, InputError } from '@replikit/core';
import { unplugDeadOwners } from './abd/abd-manager.js';
import { AbdSourceReads } from './abd/abd-source.js';
import { AbdTargetWrites } from './abd/abd-target.js';
import { XenConnection, type XenConnectionOptions } from './xapi/xen-connection.js';
import { XEN_DRIVER_KIND, XenDriver, type XenDriverInit } from './xen-driver.js';
import { type XenDriverOptions, xenDriverOptionsSchema } from './xen-options.js';

/** The `xen` row of core's kind table: what a job with `driver: xen` is judged against offline. */
export const XEN_KIND_CAPABILITIES: Capabilities = BUILTIN_DRIVER_KINDS.get(XEN_DRIVER_KIND)!;

/**
 * Connects to the pool the options name and returns a {@link XenDriver}. `tuning` sets the
 * retry policy, gives a cancel signal for the login and a warning sink (`targetPreview` is a
 * deprecated no-op).
 *
 * @throws `E_AUTH` when the credentials cannot be resolved, the login is refused or the pinned
 * certificate does not match.
 */
export async function createXenDriver(
  options: XenDriverOptions,
  tuning: Pick<XenConnectionOptions, 'retry' | 'signal' | 'onWarning'> &
    Pick<XenDriverInit, 'targetPreview' | 'failoverFaultHook'> & {
      method?: string | undefined;
      side?: string | undefined;
    } = {},
): Promise<XenDriver> {
  const { targetPreview: _ignored, failoverFaultHook, method, side, ...connectionTuning } = tuning;
  // ABD wiring (issue 17): the `abd` method needs the job's appliance section.
  if (method === 'abd' && options.abd === undefined) {
    throw new InputError(
      'method abd needs the abd section of the xen side: abd.ips, the addresses its appliance may take',
    );
  }
  const connection = await XenConnection.open({
    url: options.url,
    user: options.user,
    passwordEnv: options.passwordEnv,
    credentialsFile: options.credentialsFile,
    fingerprint: options.fingerprint,
    allowUnauthorized: options.allowUnauthorized,
    ...connectionTuning,
  });
  const abdSource = method === 'abd' && options.abd ? new AbdSourceReads(connection, options.abd) : undefined;
  const abdTarget = side === 'target' && options.abd ? new AbdTargetWrites(connection, options.abd) : undefined;
  if (abdSource || abdTarget) {
    // After a killed run: its VBDs on the appliance would keep its VDIs in use (VDI_IN_USE).
    try {
      await unplugDeadOwners(connection);
    } catch (error) {
      await connection.close();
      throw error;
    }
  }
  return new XenDriver(connection, {
    nbdConnections: options.nbdConnections,
    preferNbd: options.preferNbd,
    sr: options.sr,
    networkMap: options.networkMap,
    spoolDir: options.spoolDir,
    ...(tuning.onWarning ? { onWarning: tuning.onWarning } : {}),
    ...(failoverFaultHook ? { failoverFaultHook } : {}),
    // ABD wiring (issue 17).
    ...(abdSource ? { abdSource } : {}),
    // ABD wiring (issue 17): a target with an `abd` section writes through its appliance, any method.
    ...(abdTarget ? { abdTarget } : {}),
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
  create: (options, context) => createXenDriver(options, { method: context.method, side: context.side }),
});
