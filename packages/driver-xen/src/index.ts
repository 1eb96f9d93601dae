/**
 * `@replikit/driver-xen`: the replikit driver for XenServer / XCP-ng pools. XAPI through the
 * `xen-api` client, its own NBD client (STARTTLS, several connections, reconnect), changed
 * blocks from CBT. This version is the source side, the replica VMs of the target side and method
 * XVA (whole VMs through `/export` and `/import`); ABD and the target's block writer are not built yet.
 *
 * @packageDocumentation
 */
export { CBT_BLOCK, changedExtents } from './cbt-bitmap.js';
export { HttpRawReader } from './http-raw-reader.js';
export { NbdConnection, NbdConnectionError, type NbdEndpoint, NbdReplyError } from './nbd/nbd-connection.js';
export { NbdExport, type NbdExportOptions } from './nbd/nbd-export.js';
export { NbdDiskReader } from './nbd-reader.js';
export { DEFAULT_RETRY, type RetryPolicy } from './xapi/backoff.js';
export { type CredentialRef, resolveCredentials } from './xapi/credentials.js';
export { normaliseFingerprint } from './xapi/tls-pin.js';
export { wrapXapiError } from './xapi/xapi-error.js';
export { type CallOptions, XenConnection, type XenConnectionOptions } from './xapi/xen-connection.js';
export { XEN_DRIVER_KIND, XEN_SOURCE_CAPABILITIES, XenDriver, type XenDriverInit } from './xen-driver.js';
export { createXenDriver, XEN_KIND_CAPABILITIES, xenDriver } from './xen-driver-definition.js';
export { type XenDriverJobOptions, type XenDriverOptions, xenDriverOptionsSchema } from './xen-options.js';
