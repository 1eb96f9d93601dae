/**
 * `@replikit/xapi-sim`: a simulator of a XenServer/XCP-ng pool on loopback, for testing XAPI
 * clients without a host: XAPI's JSON-RPC and XML-RPC control plane, sessions, tasks, events,
 * SRs as folders with snapshots and changed block tracking, and delegate appliances whose
 * `VM.start` runs a real `replikit-agent` serving the VDIs plugged into them.
 *
 * @packageDocumentation
 */

export { XEN_ABD_KIND, XenAbdDriver, type XenAbdDriverOptions, xenAbdDriver } from './abd/abd-driver.js';
export { ABD_KEYS, ABD_MARKER, DEFAULT_ABD_PORT } from './abd/appliance-config.js';
export { type ApplianceInfo, Appliances } from './abd/appliances.js';
export { DEVICE_MAP_FILE, type DeviceMap, type PluggedDisk, parseDeviceMap } from './abd/device-map.js';
export type { CallContext, MethodSpec } from './api/registry.js';
export { MethodTable } from './api/registry.js';
export { type DemoPool, populateDemo } from './demo-pool.js';
export { Faults } from './faults.js';
export { NULL_REF } from './ids.js';
export { Database, type DbEvent } from './model/database.js';
export { CLASSES, type Wire, type XClass, type XRecord } from './model/wire.js';
export { type NbdExportStats, NbdStats } from './nbd/nbd-stats.js';
export type { PoolRefs, SimSession } from './sim-state.js';
export { SimState } from './sim-state.js';
export { buildMethodTable, startXapiSim, type XapiSim, type XapiSimOptions } from './simulator.js';
export { CBT_BLOCK, CbtStore } from './storage/cbt-store.js';
export type { TlsMaterial } from './tls/self-signed.js';
export { describeError, fault, XapiFault } from './xapi-fault.js';
