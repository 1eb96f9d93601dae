/**
 * `@replikit/hyperv-sim`: a simulated Hyper-V host for tests. It is a simulator, not Hyper-V: see
 * the README for what it models and what it does not.
 *
 * @packageDocumentation
 */

export { adminCmdlet } from './admin.js';
export { checkPowerShellScript, type ScriptCheck } from './check-script.js';
export { type DemoHost, populateDemoHost } from './demo-host.js';
export type { HostFaults, ScriptLogEntry, WmiJobMode } from './host/host-files.js';
export type {
  DriveRecord,
  HostState,
  NicRecord,
  SnapshotRecord,
  VmHostRecord,
  VmRecord,
} from './host/host-state.js';
export { addRemoteHost, type RemoteHostEntry, rebootHost } from './host/remoting.js';
export { createSimulatedHost, type SimulatedHyperVHost } from './hyperv-host.js';
export { writeFakePwsh } from './launcher.js';
export { type CmdletSignature, cmdletSignature, knownCmdlets } from './signatures.js';
