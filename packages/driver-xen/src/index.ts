/**
 * `@replikit/driver-xen`: the replikit driver for XenServer / XCP-ng pools. XAPI through the
 * `xen-api` client, its own NBD client (STARTTLS, several connections, reconnect), changed
 * blocks from CBT. Source and target sides (Q-Hybrid, CBT), method XVA (whole VMs through
 * `/export` and `/import`) and the delegate appliance (ABD: lifecycle, push reads, pull, writes).
 *
 * @packageDocumentation
 */

export type { ApplianceAccess } from './abd/abd-appliance.js';
export { openAbdDiskReader } from './abd/abd-disk-reader.js';
export { ABD_APPLIANCE, ABD_MARK, ABD_TEMPLATE, ABD_VBD_MARK, ABD_XENSTORE } from './abd/abd-keys.js';
export { AbdLease, type PluggedVdi } from './abd/abd-manager.js';
export { type AbdPullFrom, type AbdPullOptions, pullVdiThroughAbd } from './abd/abd-pull.js';
export type { AbdSettings, AbdTiming } from './abd/abd-settings.js';
export { AbdSourceReads } from './abd/abd-source.js';
export { AbdTargetWrites, type PullIntoOptions } from './abd/abd-target.js';
export {
  ABD_TARGET_SINK_BLOCK,
  type AbdWriteStats,
  emptyAbdWriteStats,
  openAbdTargetSink,
} from './abd/abd-target-sink.js';
export { type AbdVdiSinkOptions, DEFAULT_ABD_SINK_BLOCK, openAbdVdiSink } from './abd/abd-vdi-sink.js';
export { CBT_BLOCK, changedExtents } from './cbt-bitmap.js';
export { HttpRawReader } from './http-raw-reader.js';
export { type BlockSource, HttpVdiSink, WRITE_BLOCK } from './http-vdi-sink.js';
export { NbdConnection, NbdConnectionError, type NbdEndpoint, NbdReplyError } from './nbd/nbd-connection.js';
export { NbdExport, type NbdExportOptions } from './nbd/nbd-export.js';
export { NbdDiskReader } from './nbd-reader.js';
export type { VdiSink, VdiSinkFactory, VdiSinkTarget } from './vdi-sink.js';
export { DEFAULT_RETRY, type RetryPolicy } from './xapi/backoff.js';
export { type CredentialRef, resolveCredentials } from './xapi/credentials.js';
export { normaliseFingerprint } from './xapi/tls-pin.js';
export { wrapXapiError } from './xapi/xapi-error.js';
export { type CallOptions, XenConnection, type XenConnectionOptions } from './xapi/xen-connection.js';
export {
  XEN_CAPABILITIES,
  XEN_DRIVER_KIND,
  XEN_SOURCE_CAPABILITIES,
  XenDriver,
  type XenDriverInit,
} from './xen-driver.js';
export { createXenDriver, XEN_KIND_CAPABILITIES, xenDriver } from './xen-driver-definition.js';
export { type XenDriverJobOptions, type XenDriverOptions, xenDriverOptionsSchema } from './xen-options.js';
