import { createHash, randomUUID } from 'node:crypto';
import { type DiskReader, throwIfAborted } from '@replikit/core';
import { isZero } from '../byte-source.js';
import { NULL_REF } from './ova-datamodel.js';
import { encodeXapi, type XapiValue } from './ova-xml.js';
import { TAR_BLOCK, tarHeader, tarPadding } from './tar.js';

/** XVA chunk size: every disk is cut into 1 MiB files. */
export const XVA_CHUNK = 1024 * 1024;

/** A disk to put into an XVA. */
export interface XvaDiskSource {
  /** The disk's content. */
  reader: DiskReader;
  /** The VDI's name. @default `disk N` */
  name?: string;
  /** The VDI's uuid. @default random */
  uuid?: string;
  /** Boot from it. @default true for the first disk */
  bootable?: boolean;
}

/** The VM an XVA describes. Fields replikit does not know fall back to a plain HVM guest. */
export interface XvaVmSpec {
  name: string;
  description?: string;
  /** @default random */
  uuid?: string;
  /** Virtual CPUs. @default 1 */
  cpus?: number;
  /** Memory in bytes (static and dynamic, min and max alike). @default 1 GiB */
  memoryBytes?: number;
  /** Firmware, written as `HVM_boot_params.firmware`. @default 'bios' */
  firmware?: 'bios' | 'uefi';
  /** HVM boot order (`HVM_boot_params.order`): c = disk, d = CD, n = network. @default 'cdn' */
  bootOrder?: string;
  /** XAPI's `domain_type`. @default 'hvm' */
  domainType?: 'hvm' | 'pv' | 'pv_in_pvh' | 'pvh';
  /** `platform` keys, added to (and overriding) replikit's defaults (acpi, apic, pae, viridian, nx…). */
  platform?: Record<string, string>;
  /** `other_config` keys. */
  otherConfig?: Record<string, string>;
}

/** Options of {@link xvaStream}. */
export interface XvaStreamOptions {
  vm: XvaVmSpec;
  disks: XvaDiskSource[];
  /** Modification time of the tar entries, in seconds since 1970. @default now */
  mtime?: number;
  signal?: AbortSignal;
}

/** A disk as {@link buildOvaXml} describes it. */
export interface OvaDisk {
  name: string;
  uuid: string;
  size: number;
  bootable: boolean;
}

/**
 * The `ova.xml` document for a VM and its disks: one VM, one SR, and a VDI and a VBD per disk,
 * each record complete: every field XAPI's datamodel declares without a default is present (see
 * {@link OVA_REQUIRED_FIELDS}), with the VM's CPUs, memory, firmware, boot order and platform
 * from `vm`. References between the records use the archive's `Ref:N` ids; references to objects
 * outside the archive (host, metrics) are XAPI's null reference.
 */
export function buildOvaXml(vm: XvaVmSpec, disks: OvaDisk[]) {
  const vmRef = 'Ref:0';
  const srRef = 'Ref:1';
  const vdiRef = (i: number) => `Ref:${10 + 2 * i}`;
  const vbdRef = (i: number) => `Ref:${11 + 2 * i}`;
  const memory = String(vm.memoryBytes ?? 1024 ** 3);
  const cpus = String(vm.cpus ?? 1);
  const firmware = vm.firmware ?? 'bios';
  const vmRecord: Record<string, XapiValue> = {
    uuid: vm.uuid ?? randomUUID(),
    allowed_operations: [],
    current_operations: {},
    power_state: 'Halted',
    name_label: vm.name,
    name_description: vm.description ?? '',
    user_version: '1',
    is_a_template: false,
    is_default_template: false,
    suspend_VDI: NULL_REF,
    resident_on: NULL_REF,
    affinity: NULL_REF,
    memory_overhead: '0',
    memory_target: '0',
    memory_static_max: memory,
    memory_dynamic_max: memory,
    memory_dynamic_min: memory,
    memory_static_min: memory,
    VCPUs_params: {},
    VCPUs_max: cpus,
    VCPUs_at_startup: cpus,
    actions_after_shutdown: 'destroy',
    actions_after_reboot: 'restart',
    actions_after_crash: 'restart',
    consoles: [],
    VIFs: [],
    VBDs: disks.map((_, i) => vbdRef(i)),
    VUSBs: [],
    crash_dumps: [],
    VTPMs: [],
    PV_bootloader: '',
    PV_kernel: '',
    PV_ramdisk: '',
    PV_args: '',
    PV_bootloader_args: '',
    PV_legacy_args: '',
    HVM_boot_policy: vm.domainType === 'pv' ? '' : 'BIOS order',
    HVM_boot_params: { order: vm.bootOrder ?? 'cdn', firmware },
    platform: {
      acpi: '1',
      apic: 'true',
      pae: 'true',
      viridian: 'true',
      nx: 'true',
      ...(firmware === 'uefi' ? { secureboot: 'false' } : {}),
      ...vm.platform,
    },
    PCI_bus: '',
    other_config: { ...vm.otherConfig },
    domid: '-1',
    domarch: '',
    last_boot_CPU_flags: {},
    is_control_domain: false,
    metrics: NULL_REF,
    guest_metrics: NULL_REF,
    last_booted_record: '',
    recommendations: '',
    xenstore_data: {},
    ha_always_run: false,
    ha_restart_priority: '',
    is_a_snapshot: false,
    snapshot_of: NULL_REF,
    snapshots: [],
    transportable_snapshot_id: '',
    blobs: {},
    tags: [],
    blocked_operations: {},
    snapshot_info: {},
    snapshot_metadata: '',
    parent: NULL_REF,
    children: [],
    bios_strings: {},
    VGPUs: [],
    attached_PCIs: [],
    suspend_SR: NULL_REF,
    version: '0',
    generation_id: '0:0',
    hardware_platform_version: '0',
    has_vendor_device: false,
    requires_reboot: false,
    reference_label: '',
    domain_type: vm.domainType ?? 'hvm',
    NVRAM: {},
  };
  const objects: XapiValue[] = [
    { class: 'VM', id: vmRef, snapshot: vmRecord },
    {
      class: 'SR',
      id: srRef,
      snapshot: {
        uuid: randomUUID(),
        name_label: 'replikit export',
        name_description: '',
        allowed_operations: [],
        current_operations: {},
        VDIs: disks.map((_, i) => vdiRef(i)),
        PBDs: [],
        virtual_allocation: String(disks.reduce((n, d) => n + d.size, 0)),
        physical_utilisation: '0',
        physical_size: '0',
        type: 'ext',
        content_type: 'user',
        shared: false,
        other_config: {},
        tags: [],
        sm_config: {},
        blobs: {},
      },
    },
  ];
  disks.forEach((d, i) => {
    objects.push({
      class: 'VDI',
      id: vdiRef(i),
      snapshot: {
        uuid: d.uuid,
        name_label: d.name,
        name_description: '',
        allowed_operations: [],
        current_operations: {},
        SR: srRef,
        VBDs: [vbdRef(i)],
        crash_dumps: [],
        virtual_size: String(d.size),
        physical_utilisation: String(d.size),
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
        tags: [],
      },
    });
    objects.push({
      class: 'VBD',
      id: vbdRef(i),
      snapshot: {
        uuid: randomUUID(),
        allowed_operations: [],
        current_operations: {},
        VM: vmRef,
        VDI: vdiRef(i),
        device: `xvd${String.fromCharCode(97 + (i % 26))}`,
        userdevice: String(i),
        bootable: d.bootable,
        mode: 'RW',
        type: 'Disk',
        unpluggable: true,
        storage_lock: false,
        empty: false,
        other_config: { owner: 'true' },
        currently_attached: false,
        status_code: '0',
        status_detail: '',
        runtime_properties: {},
        qos_algorithm_type: '',
        qos_algorithm_params: {},
        qos_supported_algorithms: [],
        metrics: NULL_REF,
      },
    });
  });
  const doc = {
    version: {
      hostname: 'replikit',
      date: new Date().toISOString().slice(0, 10),
      product_version: '8.2.1',
      product_brand: 'XCP-ng',
      build_number: 'replikit',
      xapi_major: 1,
      xapi_minor: 20,
      export_vsn: 2,
    },
    objects,
  };
  return { xml: encodeXapi(doc), vdiRef };
}

/** The name of chunk `index` of the VDI whose reference is `ref` (`Ref:10/00000003`). */
export function chunkName(ref: string, index: number): string {
  return `${ref}/${String(index).padStart(8, '0')}`;
}

/**
 * Produces an XVA (XenServer VM export) as a stream of byte chunks: a POSIX tar with `ova.xml`
 * first, then each disk as 1 MiB chunk files each followed by its `.checksum` (SHA-1, hex). All-zero
 * chunks are omitted, except the first and the last chunk of every disk, which are always written
 * as XAPI writes them: chunk N is then at N MiB both for readers that place chunks by number and
 * for XAPI's importer, which sizes gaps by the first chunk (so when the first disk is under 1 MiB,
 * no chunk is left out). Disks are written in the order XAPI's importer fills them, their
 * references sorted as strings. The archive ends with tar's two zero blocks.
 *
 * @example
 * ```ts
 * const disk = await openDisk('/images/web.vhd');
 * await pipeline(Readable.from(xvaStream({ vm: { name: 'web' }, disks: [{ reader: disk }] })), createWriteStream('/tmp/web.xva'));
 * ```
 */
export async function* xvaStream(options: XvaStreamOptions): AsyncGenerator<Uint8Array> {
  const mtime = options.mtime ?? Date.now() / 1000;
  const disks = options.disks.map((d, i) => ({
    name: d.name ?? `disk ${i}`,
    uuid: d.uuid ?? randomUUID(),
    size: d.reader.size,
    bootable: d.bootable ?? i === 0,
  }));
  const { xml, vdiRef } = buildOvaXml(options.vm, disks);
  const xmlBytes = new TextEncoder().encode(xml);
  yield tarHeader('ova.xml', xmlBytes.length, mtime);
  yield xmlBytes;
  yield tarPadding(xmlBytes.length);
  // XAPI's importer fills the VDIs in the order of their references as strings (Ref:100 before
  // Ref:12) and sizes every gap by the archive's first chunk (xapi-project/xen-api
  // ocaml/xapi/stream_vdi.ml for_each_vdi, recv_all_vdi): the disks go in that order, and when the
  // first chunk is shorter than 1 MiB (a first disk under 1 MiB) no chunk is left out
  const order = options.disks
    .map((_, i) => i)
    .sort((a, b) => (vdiRef(a) < vdiRef(b) ? -1 : vdiRef(a) > vdiRef(b) ? 1 : 0));
  const first = order.find((i) => options.disks[i]!.reader.size > 0);
  const dense = first !== undefined && options.disks[first]!.reader.size < XVA_CHUNK;
  for (const i of order) {
    const reader = options.disks[i]!.reader;
    const chunks = Math.ceil(reader.size / XVA_CHUNK);
    const wanted = new Set<number>();
    if (dense) for (let c = 0; c < chunks; c++) wanted.add(c);
    else {
      for await (const e of reader.allocated(options.signal ? { signal: options.signal } : {})) {
        for (let c = Math.floor(e.offset / XVA_CHUNK); c * XVA_CHUNK < e.offset + e.length; c++) wanted.add(c);
      }
    }
    // XAPI always writes the first and the last chunk (stream_vdi.ml send_one)
    if (chunks > 0) wanted.add(0).add(chunks - 1);
    for (const c of [...wanted].sort((a, b) => a - b)) {
      throwIfAborted(options.signal);
      const length = Math.min(XVA_CHUNK, reader.size - c * XVA_CHUNK);
      const data = await reader.read(c * XVA_CHUNK, length);
      if (!dense && c !== 0 && c !== chunks - 1 && isZero(data)) continue;
      const name = chunkName(vdiRef(i), c);
      yield tarHeader(name, data.length, mtime);
      yield data;
      yield tarPadding(data.length);
      const sum = new TextEncoder().encode(createHash('sha1').update(data).digest('hex'));
      yield tarHeader(`${name}.checksum`, sum.length, mtime);
      yield sum;
      yield tarPadding(sum.length);
    }
  }
  yield new Uint8Array(2 * TAR_BLOCK);
}
