import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRemoteTarget, type RemoteTargetDriver } from '@replikit/transport';
import type { SimFixture } from './sim-fixture.js';

/** What a test needs to reach an appliance's agent. */
export interface ApplianceHandle {
  readonly vm: string;
  readonly uuid: string;
  readonly ip: string;
  readonly port: number;
  readonly identity: string;
  readonly key: Uint8Array;
}

/** A loopback address of its own per run, so that parallel runs on one machine do not meet. */
export function freshLoopback(): string {
  return `127.${randomInt(64, 250)}.${randomInt(1, 250)}.${randomInt(2, 250)}`;
}

/** The appliance template, as the demo pool has it. */
export function makeTemplate(fx: SimFixture): Promise<string> {
  return fx.call<string>('VM.create', {
    name_label: 'replikit delegate appliance',
    is_a_template: true,
    other_config: { 'replikit:abd': 'template' },
  });
}

/**
 * An appliance made as a driver makes one: `VM.clone` (or `VM.copy`) of the template, not a template any more,
 * a VIF on the management network (unless the template brought one), its address and key in
 * `xenstore_data`.
 */
export async function makeAppliance(
  fx: SimFixture,
  template: string,
  name: string,
  options: { ip?: string; extra?: Record<string, string>; copy?: boolean } = {},
): Promise<ApplianceHandle> {
  const vm = options.copy
    ? await fx.call<string>('VM.copy', template, name, 'OpaqueRef:NULL')
    : await fx.call<string>('VM.clone', template, name);
  await fx.call('VM.set_is_a_template', vm, false);
  if ((await fx.call<string[]>('VM.get_VIFs', vm)).length === 0) {
    await fx.call('VIF.create', { VM: vm, network: fx.sim.refs.network, device: '0', MAC: '' });
  }
  const ip = options.ip ?? freshLoopback();
  const key = randomBytes(32);
  const port = 7400;
  await fx.call('VM.set_xenstore_data', vm, {
    'vm-data/ip': ip,
    'vm-data/netmask': '255.0.0.0',
    'vm-data/gateway': '127.0.0.1',
    'vm-data/replikit/psk-identity': 'xapi-sim-test',
    'vm-data/replikit/psk': key.toString('hex'),
    ...options.extra,
  });
  return { vm, uuid: await fx.call<string>('VM.get_uuid', vm), ip, port, identity: 'xapi-sim-test', key };
}

/** A remote target driver (TLS-PSK) talking to an appliance's agent, the way the Xen driver would. */
export function applianceTarget(abd: ApplianceHandle): RemoteTargetDriver {
  return createRemoteTarget({
    kind: 'xen-abd',
    address: { host: abd.ip, port: abd.port },
    security: { kind: 'tls', psk: { identity: abd.identity, key: abd.key } },
    reconnect: { attempts: 1, initialDelayMs: 10, maxDelayMs: 10 },
  });
}

/** Command lines of the processes alive now that name `needle` (read from /proc). */
export function processesNaming(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline.includes(needle)) found.push(`${pid}: ${cmdline}`);
  }
  return found;
}

/** True while /proc/<pid> exists (a process, or a zombie not reaped yet). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/**
 * A TLS-PSK handshake by a client we did not write, `openssl s_client`, against an appliance's
 * agent: resolves with its exit status and output (stdin is empty, so it ends after the handshake).
 */
export function opensslPskHandshake(
  abd: ApplianceHandle,
  keyHex: string,
): Promise<{ code: number | null; out: string }> {
  const child = spawn(
    'openssl',
    ['s_client', '-connect', `${abd.ip}:${abd.port}`, '-psk_identity', abd.identity, '-psk', keyHex, '-brief'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.once('error', (error) => reject(new Error(`openssl is missing: ${error.message}`)));
    child.once('close', (code) => resolve({ code, out }));
  });
}
