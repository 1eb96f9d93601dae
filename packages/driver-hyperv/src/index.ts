/**
 * `@replikit/driver-hyperv`: the Hyper-V driver. The source side (VMs, recovery checkpoints,
 * readers over VHDX chains, Resilient Change Tracking) on a PowerShell link that drives a host
 * through node-powershell, with scripts and parameters passed as base64.
 *
 * @packageDocumentation
 */

export type { HyperVFailoverFaultHook } from './failover/failover-context.js';
export { type HyperVHostFiles, LOCAL_HOST_FILES } from './host-files/host-files.js';
export {
  HYPERV_CAPABILITIES,
  HYPERV_DRIVER_KIND,
  HYPERV_SOURCE_CAPABILITIES,
  HyperVDriver,
  type HyperVDriverInit,
} from './hyperv-driver.js';
export { createHyperVDriver, HYPERV_KIND_CAPABILITIES, hypervDriver } from './hyperv-driver-definition.js';
export { type HyperVDriverJobOptions, type HyperVDriverOptions, hypervDriverOptionsSchema } from './hyperv-options.js';
export type { HyperVNic, HyperVVMInfo } from './hyperv-records.js';
export { unwrapEnvelope } from './powershell/envelope.js';
export { PowerShellLink, type PowerShellLinkOptions } from './powershell/powershell-link.js';
export {
  CONTROLLER_SETUP_LINE,
  callLine,
  envelopedScript,
  type PsScript,
  remoteCallLine,
  SESSION_SETUP_LINE,
} from './powershell/ps-script.js';
export { REMOTE_SESSION_SCRIPTS, type RemoteSessionTarget } from './powershell/remote-session.js';
export type { StoredReferencePoint } from './rct/reference-points.js';
export { FAILOVER_SCRIPTS } from './scripts/failover-scripts.js';
export { SOURCE_SCRIPTS } from './scripts/hyperv-scripts.js';
export { TARGET_SCRIPTS } from './scripts/target-scripts.js';
export type { HyperVTargetInit } from './target/hyperv-target.js';
export { agentTargetFiles, LOCAL_TARGET_FILES, type TargetFiles } from './target/target-files.js';
