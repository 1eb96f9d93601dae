/**
 * `@replikit/driver-hyperv`: the Hyper-V driver (in progress). For now: the PowerShell link that
 * drives a host through node-powershell, with scripts and parameters passed as base64.
 *
 * @packageDocumentation
 */
export { unwrapEnvelope } from './powershell/envelope.js';
export { PowerShellLink, type PowerShellLinkOptions } from './powershell/powershell-link.js';
export { callLine, envelopedScript, type PsScript, SESSION_SETUP_LINE } from './powershell/ps-script.js';
