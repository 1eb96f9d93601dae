import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type Xapi } from 'xen-api';
import { startXapiSim, type XapiSim, type XapiSimOptions } from '../../src/index.js';

/** A running simulator in a fresh folder, and its clean-up. */
export interface SimFixture {
  readonly sim: XapiSim;
  readonly dir: string;
  /** A session ref, logged in in-process. */
  readonly session: string;
  /** Calls a method in-process with the fixture's session. */
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  close(): Promise<void>;
}

/** Starts a simulator in a temporary folder. */
export async function startSim(options: Partial<XapiSimOptions> = {}): Promise<SimFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'xapi-sim-'));
  const sim = await startXapiSim({ dir, ...options });
  const session = (await sim.call('session.login_with_password', 'root', 'password')) as string;
  return {
    sim,
    dir,
    session,
    call: async <T>(method: string, ...args: unknown[]) => (await sim.call(method, session, ...args)) as T,
    async close() {
      await sim.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Connects the real `xen-api` client to a simulator and waits for its first fetch. */
export async function connectClient(sim: XapiSim, transport: 'auto' | 'xml-rpc' = 'auto'): Promise<Xapi> {
  const xapi = createClient({
    url: sim.url,
    auth: { user: 'root', password: 'password' },
    allowUnauthorized: true,
    transport,
    debounce: 10,
  });
  await xapi.connect();
  await xapi.objectsFetched;
  return xapi;
}

/** A halted VM with one disk of `size` bytes on the local SR, made in-process; returns refs. */
export async function makeVm(
  fx: SimFixture,
  name: string,
  size = 4 * 1024 * 1024,
): Promise<{ vm: string; vdi: string; vbd: string }> {
  const vm = await fx.call<string>('VM.create', { name_label: name });
  const vdi = await fx.call<string>('VDI.create', {
    name_label: `${name} disk`,
    SR: fx.sim.refs.sr,
    virtual_size: size,
    type: 'user',
  });
  const vbd = await fx.call<string>('VBD.create', { VM: vm, VDI: vdi, userdevice: '0', mode: 'RW', type: 'Disk' });
  await fx.call('VIF.create', { VM: vm, network: fx.sim.refs.network, device: '0', MAC: '02:00:00:00:10:01' });
  return { vm, vdi, vbd };
}
