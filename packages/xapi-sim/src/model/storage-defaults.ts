import { NULL_REF } from '../ids.js';
import type { XRecord } from './wire.js';

const EPOCH = '19700101T00:00:00Z';

/** Every field of a XAPI `SR` record. */
export function srDefaults(): XRecord {
  return {
    uuid: '',
    name_label: '',
    name_description: '',
    allowed_operations: [],
    current_operations: {},
    VDIs: [],
    PBDs: [],
    virtual_allocation: 0,
    physical_utilisation: 0,
    physical_size: 0,
    type: 'ext',
    content_type: 'user',
    shared: false,
    other_config: {},
    tags: [],
    sm_config: {},
    blobs: {},
    local_cache_enabled: false,
    introduced_by: NULL_REF,
    clustered: false,
    is_tools_sr: false,
  };
}

/** Every field of a XAPI `PBD` record. */
export function pbdDefaults(): XRecord {
  return { uuid: '', host: NULL_REF, SR: NULL_REF, device_config: {}, currently_attached: true, other_config: {} };
}

/** Every field of a XAPI `VDI` record. */
export function vdiDefaults(): XRecord {
  return {
    uuid: '',
    name_label: '',
    name_description: '',
    allowed_operations: [],
    current_operations: {},
    SR: NULL_REF,
    VBDs: [],
    crash_dumps: [],
    virtual_size: 0,
    physical_utilisation: 0,
    type: 'user',
    sharable: false,
    read_only: false,
    other_config: {},
    storage_lock: false,
    location: '',
    managed: true,
    missing: false,
    parent: NULL_REF,
    xenstore_data: {},
    sm_config: {},
    is_a_snapshot: false,
    snapshot_of: NULL_REF,
    snapshots: [],
    snapshot_time: EPOCH,
    tags: [],
    allow_caching: false,
    on_boot: 'persist',
    metadata_of_pool: NULL_REF,
    metadata_latest: false,
    is_tools_iso: false,
    cbt_enabled: false,
  };
}

/** Every field of a XAPI `VBD` record. */
export function vbdDefaults(): XRecord {
  return {
    uuid: '',
    allowed_operations: [],
    current_operations: {},
    VM: NULL_REF,
    VDI: NULL_REF,
    device: '',
    userdevice: '0',
    bootable: false,
    mode: 'RW',
    type: 'Disk',
    unpluggable: true,
    storage_lock: false,
    empty: false,
    other_config: {},
    currently_attached: false,
    status_code: 0,
    status_detail: '',
    runtime_properties: {},
    qos_algorithm_type: '',
    qos_algorithm_params: {},
    qos_supported_algorithms: [],
    metrics: NULL_REF,
  };
}
