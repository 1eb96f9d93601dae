import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { newUuid } from './ids.js';
import type { Database } from './model/database.js';
import type { PoolRefs } from './sim-state.js';

/** What a fresh simulated pool is made of. */
export interface BootstrapOptions {
  /** The folder holding the SRs. */
  readonly dir: string;
  /** Size of the local SR in bytes. */
  readonly srSize: number;
  /** The host's address as clients see it. */
  readonly address: string;
}

/** Adds a local SR (a folder under `dir`) with its PBD on `host`; returns the SR ref. */
export async function addLocalSr(db: Database, dir: string, host: string, name: string, size: number): Promise<string> {
  const uuid = newUuid();
  const path = join(dir, `sr-${uuid}`);
  await mkdir(path, { recursive: true });
  const sr = db.create('SR', {
    uuid,
    name_label: name,
    physical_size: size,
    type: 'ext',
    other_config: { 'i18n-key': 'local-storage' },
  });
  const pbd = db.create('PBD', { host, SR: sr, device_config: { path } });
  db.update('SR', sr, { PBDs: [pbd] });
  db.addToSet('host', host, 'PBDs', pbd);
  return sr;
}

/**
 * Creates the objects every XenServer host has at boot: the pool, its master host, dom0, a local
 * SR (a folder) with its PBD, and a management network (purpose `nbd`) with its PIF.
 */
export async function bootstrapPool(db: Database, options: BootstrapOptions): Promise<PoolRefs> {
  const host = db.create('host', { name_label: 'xapi-sim', address: options.address, hostname: 'xapi-sim' });
  const pool = db.create('pool', { name_label: 'xapi-sim pool', master: host });
  const dom0 = db.create('VM', {
    name_label: 'Control domain on host: xapi-sim',
    is_control_domain: true,
    power_state: 'Running',
    resident_on: host,
    domid: 0,
    domain_type: 'pv',
  });
  const sr = await addLocalSr(db, options.dir, host, 'Local storage', options.srSize);
  const network = db.create('network', {
    name_label: 'Pool-wide network associated with eth0',
    bridge: 'xenbr0',
    purpose: ['nbd'],
  });
  const pif = db.create('PIF', { network, host, IP: options.address, MAC: '02:00:00:00:00:01' });
  db.update('network', network, { PIFs: [pif] });
  db.update('host', host, { control_domain: dom0, resident_VMs: [dom0], PIFs: [pif] });
  db.update('pool', pool, { default_SR: sr, suspend_image_SR: sr, crash_dump_SR: sr });
  return { pool, host, dom0, sr, network };
}
