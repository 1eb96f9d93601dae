import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { InputError } from '@replikit/core';
import { defaultAgentNodeArgs } from './abd/agent-process.js';
import { type ApplianceInfo, Appliances } from './abd/appliances.js';
import { registerEvents } from './api/event.js';
import { registerAllAccessors } from './api/generic.js';
import { registerNetwork } from './api/network.js';
import { MethodTable } from './api/registry.js';
import { registerSession } from './api/session.js';
import { registerTasks } from './api/task.js';
import { registerVbd } from './api/vbd.js';
import { registerVdi } from './api/vdi.js';
import { registerVm } from './api/vm.js';
import { addLocalSr, bootstrapPool } from './bootstrap.js';
import type { Faults } from './faults.js';
import { guestWrite } from './guest.js';
import { exportRawVdi } from './http/export-raw-vdi.js';
import { exportXva } from './http/export-xva.js';
import { createRequestHandler } from './http/http-server.js';
import { importRawVdi } from './http/import-raw-vdi.js';
import { importXva } from './http/import-xva.js';
import { Database } from './model/database.js';
import { type NbdServer, startNbdServer } from './nbd/nbd-server.js';
import type { NbdStats } from './nbd/nbd-stats.js';
import { type PoolRefs, SimState } from './sim-state.js';
import { CbtStore } from './storage/cbt-store.js';
import { makeSelfSigned, type TlsMaterial } from './tls/self-signed.js';

/** Options of {@link startXapiSim}. */
export interface XapiSimOptions {
  /** The folder that holds the simulated SRs (one sub-folder each). Required. */
  readonly dir: string;
  /** The user name clients log in with. @default 'root' */
  readonly user?: string;
  /** The password clients log in with. @default 'password' */
  readonly password?: string;
  /** The loopback address to listen on. @default '127.0.0.1' */
  readonly host?: string;
  /** The port to listen on; 0 picks a free one. @default 0 */
  readonly port?: number;
  /** Size of the local SR in bytes; VDIs beyond it fail with `SR_FULL`. @default 1 TiB */
  readonly srSize?: number;
  /**
   * `VDI.create` rounds the `virtual_size` it is given up to a multiple of this many bytes, as a
   * real SR's storage manager does (a VHD SR rounds to 2 MiB). @default 1 (sizes kept exact)
   */
  readonly vdiSizeStep?: number;
  /** Serve the control plane and data paths over HTTPS with the host certificate. @default false */
  readonly https?: boolean;
  /**
   * Run an NBD server like xapi-nbd (STARTTLS with the host certificate); `VDI.get_nbd_info`
   * returns `[]` without it. XAPI's port is 10809; 0 picks a free one. @default false
   */
  readonly nbd?: boolean | { readonly port?: number };
  /** The host certificate (PEM). When HTTPS or NBD needs one and none is given, `openssl` makes a self-signed one. */
  readonly tls?: { readonly key: string; readonly cert: string; readonly subject?: string };
}

/** A running simulator. */
export interface XapiSim {
  /** The URL to give a XAPI client (`http://127.0.0.1:<port>`). */
  readonly url: string;
  /** The host certificate (PEM) and qemu-style folder of it, when HTTPS or NBD is on. */
  readonly tls: TlsMaterial | undefined;
  /** The refs of the pool, master host, dom0, local SR and management network. */
  readonly refs: PoolRefs;
  /** The simulator's state (database, sessions, CBT), for tests that look inside. */
  readonly state: SimState;
  /** Calls a XAPI method in-process, as a client would over the wire. */
  call(method: string, ...params: unknown[]): Promise<unknown>;
  /** The guest of a running VM writes `data` at `offset` of its disk `userdevice` (CBT tracks it). */
  guestWrite(vm: string, userdevice: string, offset: number, data: Uint8Array): Promise<void>;
  /** The path of a VDI's data file. */
  vdiPath(vdi: string): string;
  /** Holds every `Async.<method>` task pending until the returned function is called (faults on demand). */
  hold(method: string): () => void;
  /** The user name and password clients log in with. */
  readonly credentials: { readonly user: string; readonly password: string };
  /** Adds another local SR (a folder) of `size` bytes; returns its ref. */
  addSr(name: string, size?: number): Promise<string>;
  /** Failures on demand: a call failing once, a pending-task limit, the unplug race. */
  readonly faults: Faults;
  /** What the NBD server served per export (VDI uuid): bytes, reads, 64 KiB blocks touched. */
  readonly nbdStats: NbdStats;
  /**
   * The running delegate appliance `vm` (a VM whose `other_config` has `replikit:abd`): where its
   * `replikit-agent` listens, its process id and folder; `undefined` when it is not running.
   */
  appliance(vm: string): ApplianceInfo | undefined;
  /** Stops the server, ends long-polls and stops every appliance's agent. */
  close(): Promise<void>;
}

/** Builds the full method table of the simulator. */
export function buildMethodTable(): MethodTable {
  const table = new MethodTable();
  registerAllAccessors(table);
  registerSession(table);
  registerEvents(table);
  registerTasks(table);
  registerVdi(table);
  registerVbd(table);
  registerVm(table);
  registerNetwork(table);
  return table;
}

/**
 * Starts a simulated XenServer pool (one host) on loopback. It is a simulator: see the package
 * README for what it models and what it does not.
 *
 * @example
 * ```ts
 * const sim = await startXapiSim({ dir: '/tmp/sim' });
 * const xapi = createClient({ url: sim.url, auth: { user: 'root', password: 'password' }, allowUnauthorized: true });
 * await xapi.connect();
 * ```
 */
export async function startXapiSim(options: XapiSimOptions): Promise<XapiSim> {
  if (typeof options.dir !== 'string' || options.dir === '') throw new InputError('xapi-sim needs a dir for its SRs');
  const host = options.host ?? '127.0.0.1';
  const db = new Database();
  const refs = await bootstrapPool(db, { dir: options.dir, srSize: options.srSize ?? 2 ** 40, address: host });
  const srDir = (sr: string) => join(options.dir, `sr-${db.field<string>('SR', sr, 'uuid')}`);
  const state = new SimState(
    db,
    buildMethodTable(),
    refs,
    new CbtStore(),
    { user: options.user ?? 'root', password: options.password ?? 'password' },
    srDir,
  );
  if (options.vdiSizeStep !== undefined) {
    if (!Number.isSafeInteger(options.vdiSizeStep) || options.vdiSizeStep < 1) {
      throw new InputError('xapi-sim: vdiSizeStep must be a positive whole number of bytes');
    }
    state.vdiSizeStep = options.vdiSizeStep;
  }
  const appliances = new Appliances(state, options.dir, defaultAgentNodeArgs());
  state.abd = appliances;
  const needTls = options.https === true || (options.nbd !== undefined && options.nbd !== false);
  const tls: TlsMaterial | undefined = !needTls
    ? undefined
    : options.tls
      ? { key: options.tls.key, cert: options.tls.cert, subject: options.tls.subject ?? 'xapi-sim', dir: '' }
      : await makeSelfSigned(join(options.dir, 'tls'), host);
  let nbd: NbdServer | undefined;
  if (tls !== undefined && options.nbd !== undefined && options.nbd !== false) {
    const port = typeof options.nbd === 'object' ? (options.nbd.port ?? 0) : 0;
    nbd = await startNbdServer(state, host, port, tls);
    state.nbd = { address: host, port: nbd.port, cert: tls.cert, subject: tls.subject };
  }
  const handler = createRequestHandler(state, {
    '/export_raw_vdi': exportRawVdi,
    '/import_raw_vdi': importRawVdi,
    '/export': exportXva,
    '/import': importXva,
  });
  const server: Server =
    options.https === true && tls !== undefined
      ? createHttpsServer({ key: tls.key, cert: tls.cert }, handler)
      : createHttpServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `${options.https === true ? 'https' : 'http'}://${host}:${port}`;
  return {
    url,
    tls,
    refs,
    state,
    call: (method, ...params) => state.call(method, params as never),
    guestWrite: (vm, userdevice, offset, data) => guestWrite(state, vm, userdevice, offset, data),
    vdiPath: (vdi) => state.vdiPath(vdi),
    appliance: (vm) => appliances.info(vm),
    faults: state.faults,
    nbdStats: state.nbdStats,
    credentials: state.credentials,
    addSr: (name, size) => addLocalSr(db, options.dir, refs.host, name, size ?? options.srSize ?? 2 ** 40),
    hold(method) {
      let release!: () => void;
      state.holds.set(method, new Promise<void>((r) => (release = r)));
      return () => {
        state.holds.delete(method);
        release();
      };
    },
    async close() {
      state.close();
      await appliances.close();
      await nbd?.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
