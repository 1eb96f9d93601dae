import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeFileAtomic } from '@replikit/core/internal';
import { powerOff } from '../api/vm-ops.js';
import { NULL_REF } from '../ids.js';
import type { SimState } from '../sim-state.js';
import { type AgentProcess, startAgentProcess } from './agent-process.js';
import { type ApplianceConfig, applianceConfig, applianceFault, isAppliance } from './appliance-config.js';
import { DEVICE_MAP_FILE, type DeviceMap, type PluggedDisk } from './device-map.js';

/** A running appliance, as tests and drivers see it. */
export interface ApplianceInfo {
  /** Where its agent listens (TLS-PSK). */
  readonly address: { readonly host: string; readonly port: number };
  /** The agent's process id. */
  readonly pid: number;
  /** The appliance's folder: `devices.json` (what is plugged) and `agent.log`. */
  readonly folder: string;
  /** Its address, from `xenstore_data` `vm-data/ip`. */
  readonly ip: string;
  /** Its netmask, from `vm-data/netmask` (default `255.0.0.0`). */
  readonly netmask: string;
  /** Its gateway, from `vm-data/gateway`, when set. */
  readonly gateway: string | undefined;
}

interface Entry {
  readonly config: ApplianceConfig;
  readonly folder: string;
  agent: AgentProcess | undefined;
  /** The device map rewrite in progress (settled), the next one waits for it. */
  writing: Promise<void>;
}

/**
 * The delegate appliances of a simulator: `VM.start` of an appliance claims its address and
 * spawns its agent, `VBD.plug`/`unplug` rewrite what it sees, a shutdown or `close()` stops it.
 */
export class Appliances {
  /** Appliances starting or running, by VM ref. */
  private readonly entries = new Map<string, Entry>();

  /**
   * @param sim - the simulator's state.
   * @param dir - the simulator's folder; each appliance gets `appliances/<vm uuid>` in it.
   * @param nodeArgs - how to run the agent's entry point with `process.execPath`.
   */
  constructor(
    private readonly sim: SimState,
    private readonly dir: string,
    private readonly nodeArgs: readonly string[],
  ) {}

  /** True when `vm` is an appliance (its `other_config` has `replikit:abd`). */
  isAppliance(vm: string): boolean {
    return isAppliance(this.sim, vm);
  }

  /**
   * Checks an appliance's configuration and claims its address, before the VM changes state:
   * `INTERNAL_ERROR` when a key is wrong or another appliance has the address already.
   */
  claim(vm: string): void {
    const config = applianceConfig(this.sim, vm);
    for (const other of this.entries.values()) {
      if (other.config.ip === config.ip) {
        throw applianceFault(
          config.name,
          config.uuid,
          `claims ${config.ip}, the address of running appliance '${other.config.name}' (${other.config.uuid}); give it another xenstore_data vm-data/ip`,
        );
      }
    }
    this.entries.set(vm, {
      config,
      folder: resolve(this.dir, 'appliances', config.uuid),
      agent: undefined,
      writing: Promise.resolve(),
    });
  }

  /** Starts the agent of a claimed appliance whose VBDs are attached; the claim is dropped if it fails. */
  async launch(vm: string): Promise<void> {
    const entry = this.entries.get(vm);
    if (entry === undefined) return;
    try {
      await mkdir(entry.folder, { recursive: true, mode: 0o700 });
      await this.writeMap(vm, entry);
      const agent = await startAgentProcess({
        nodeArgs: this.nodeArgs,
        root: entry.folder,
        host: entry.config.ip,
        port: entry.config.port,
        pskIdentity: entry.config.pskIdentity,
        pskHex: entry.config.pskHex,
        name: entry.config.name,
        uuid: entry.config.uuid,
      });
      if (this.entries.get(vm) !== entry) {
        // Shut down while its agent was starting.
        await agent.stop();
        throw applianceFault(entry.config.name, entry.config.uuid, 'was shut down while its agent started');
      }
      entry.agent = agent;
      void agent.exited.then(() => this.crashed(vm, entry, agent));
    } catch (error) {
      if (this.entries.get(vm) === entry) this.entries.delete(vm);
      throw error;
    }
  }

  /**
   * An agent that exited without being stopped is a crash of its appliance's domain: XAPI's
   * `actions_after_crash` decides, `restart` (the default) and `rename_restart` starting a new
   * agent, anything else halting the VM. A restart that fails halts it too.
   */
  private async crashed(vm: string, entry: Entry, agent: AgentProcess): Promise<void> {
    if (this.entries.get(vm) !== entry || entry.agent !== agent || !this.sim.db.has('VM', vm)) return;
    entry.agent = undefined;
    const action = this.sim.db.field<string>('VM', vm, 'actions_after_crash');
    if (action === 'restart' || action === 'rename_restart') {
      try {
        await this.launch(vm);
        return;
      } catch {
        // Falls through: the appliance halts.
      }
    }
    if (this.entries.get(vm) === entry) this.entries.delete(vm);
    if (this.sim.db.field<string>('VM', vm, 'power_state') === 'Running') powerOff(this.sim, vm);
  }

  /** Rewrites a running appliance's device map after a plug or unplug (nothing for other VMs). */
  async devicesChanged(vm: string): Promise<void> {
    const entry = this.entries.get(vm);
    if (entry !== undefined) await this.writeMap(vm, entry);
  }

  /** Stops an appliance's agent and frees its address (nothing for other VMs). */
  async stop(vm: string): Promise<void> {
    const entry = this.entries.get(vm);
    if (entry === undefined) return;
    this.entries.delete(vm);
    await entry.agent?.stop();
  }

  /** Stops every agent. */
  async close(): Promise<void> {
    await Promise.all([...this.entries.keys()].map((vm) => this.stop(vm)));
  }

  /** The running appliance `vm`, or `undefined`. */
  info(vm: string): ApplianceInfo | undefined {
    const entry = this.entries.get(vm);
    if (entry?.agent === undefined) return undefined;
    const { ip, netmask, gateway } = entry.config;
    return { address: entry.agent.address, pid: entry.agent.pid, folder: entry.folder, ip, netmask, gateway };
  }

  /** The device map of `vm` now: its attached disk VBDs and the SR folders it sees. */
  private deviceMap(vm: string, config: ApplianceConfig): DeviceMap {
    const db = this.sim.db;
    const disks: PluggedDisk[] = [];
    for (const vbd of db.field<string[]>('VM', vm, 'VBDs')) {
      const rec = db.get('VBD', vbd);
      if (rec.currently_attached !== true || rec.VDI === NULL_REF || rec.type === 'CD') continue;
      const vdi = rec.VDI as string;
      disks.push({
        device: rec.userdevice as string,
        vdi: db.field<string>('VDI', vdi, 'uuid'),
        sr: db.field<string>('SR', db.field<string>('VDI', vdi, 'SR'), 'uuid'),
        size: db.field<number>('VDI', vdi, 'virtual_size'),
        mode: rec.mode === 'RO' ? 'RO' : 'RW',
      });
    }
    disks.sort((a, b) => Number(a.device) - Number(b.device));
    const srs: Record<string, string> = {};
    for (const sr of config.srs)
      if (db.has('SR', sr)) srs[db.field<string>('SR', sr, 'uuid')] = resolve(this.sim.srDir(sr));
    return { version: 1, appliance: { uuid: config.uuid, name: config.name }, srs, disks };
  }

  /**
   * Rewrites the device map with what is plugged when the rewrite begins. Rewrites of one
   * appliance run one after the other: two at once (an unplug and a plug close together) could
   * finish in either order, and the older map landing last hid a plugged disk from the agent.
   */
  private writeMap(vm: string, entry: Entry): Promise<void> {
    const write = entry.writing.then(async () => {
      if (!this.sim.db.has('VM', vm)) return;
      const map = this.deviceMap(vm, entry.config);
      await writeFileAtomic(join(entry.folder, DEVICE_MAP_FILE), `${JSON.stringify(map, null, 2)}\n`);
    });
    entry.writing = write.catch(() => undefined);
    return write;
  }
}
