import { createHash, randomUUID } from 'node:crypto';
import { type DiskReader, throwIfAborted } from '@replikit/core';
import { isZero } from '../byte-source.js';
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

/** The VM an XVA describes. */
export interface XvaVmSpec {
  name: string;
  description?: string;
  /** @default random */
  uuid?: string;
  /** @default 1 */
  cpus?: number;
  /** @default 1 GiB */
  memoryBytes?: number;
}

/** Options of {@link xvaStream}. */
export interface XvaStreamOptions {
  vm: XvaVmSpec;
  disks: XvaDiskSource[];
  /** Modification time of the tar entries, in seconds since 1970. @default now */
  mtime?: number;
  signal?: AbortSignal;
}

/** The `ova.xml` document for a VM and its disks (VM, VBD, VDI and SR records). */
export function buildOvaXml(vm: XvaVmSpec, disks: { name: string; uuid: string; size: number; bootable: boolean }[]) {
  const vmRef = 'Ref:0';
  const srRef = 'Ref:1';
  const vdiRef = (i: number) => `Ref:${10 + 2 * i}`;
  const vbdRef = (i: number) => `Ref:${11 + 2 * i}`;
  const memory = String(vm.memoryBytes ?? 1024 ** 3);
  const cpus = String(vm.cpus ?? 1);
  const objects: XapiValue[] = [
    {
      class: 'VM',
      id: vmRef,
      snapshot: {
        uuid: vm.uuid ?? randomUUID(),
        name_label: vm.name,
        name_description: vm.description ?? '',
        power_state: 'Halted',
        user_version: '1',
        is_a_template: false,
        is_a_snapshot: false,
        domain_type: 'hvm',
        memory_static_min: memory,
        memory_static_max: memory,
        memory_dynamic_min: memory,
        memory_dynamic_max: memory,
        VCPUs_max: cpus,
        VCPUs_at_startup: cpus,
        VCPUs_params: {},
        actions_after_shutdown: 'destroy',
        actions_after_reboot: 'restart',
        actions_after_crash: 'restart',
        HVM_boot_policy: 'BIOS order',
        HVM_boot_params: { order: 'cdn' },
        HVM_shadow_multiplier: 1.0,
        PV_bootloader: '',
        PV_kernel: '',
        PV_ramdisk: '',
        PV_args: '',
        PV_bootloader_args: '',
        PV_legacy_args: '',
        platform: { acpi: '1', apic: 'true', pae: 'true', viridian: 'true', nx: 'true' },
        other_config: {},
        blocked_operations: {},
        tags: [],
        VBDs: disks.map((_, i) => vbdRef(i)),
        VIFs: [],
      },
    },
    {
      class: 'SR',
      id: srRef,
      snapshot: { uuid: randomUUID(), name_label: 'replikit export', name_description: '', content_type: 'user' },
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
        virtual_size: String(d.size),
        physical_utilisation: String(d.size),
        type: 'user',
        sharable: false,
        read_only: false,
        SR: srRef,
        VBDs: [vbdRef(i)],
        other_config: {},
        sm_config: {},
        xenstore_data: {},
        tags: [],
      },
    });
    objects.push({
      class: 'VBD',
      id: vbdRef(i),
      snapshot: {
        uuid: randomUUID(),
        VM: vmRef,
        VDI: vdiRef(i),
        device: `xvd${String.fromCharCode(97 + (i % 26))}`,
        userdevice: String(i),
        bootable: d.bootable,
        mode: 'RW',
        type: 'Disk',
        unpluggable: true,
        empty: false,
        other_config: { owner: 'true' },
        qos_algorithm_type: '',
        qos_algorithm_params: {},
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
 * for XAPI's importer, which sizes gaps by the first chunk. The archive ends with tar's two zero
 * blocks.
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
  for (let i = 0; i < options.disks.length; i++) {
    const reader = options.disks[i]!.reader;
    const chunks = Math.ceil(reader.size / XVA_CHUNK);
    const wanted = new Set<number>();
    for await (const e of reader.allocated(options.signal ? { signal: options.signal } : {})) {
      for (let c = Math.floor(e.offset / XVA_CHUNK); c * XVA_CHUNK < e.offset + e.length; c++) wanted.add(c);
    }
    // XAPI always writes the first and the last chunk, and its importer sizes every gap by the
    // first chunk's length (xapi-project/xen-api ocaml/xapi/stream_vdi.ml send_one, recv_all_vdi)
    if (chunks > 0) wanted.add(0).add(chunks - 1);
    for (const c of [...wanted].sort((a, b) => a - b)) {
      throwIfAborted(options.signal);
      const length = Math.min(XVA_CHUNK, reader.size - c * XVA_CHUNK);
      const data = await reader.read(c * XVA_CHUNK, length);
      if (c !== 0 && c !== chunks - 1 && isZero(data)) continue;
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
