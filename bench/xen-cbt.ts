// A CBT-planned incremental against the same incremental with hash-diff (issue 17): a VM on the
// simulated pool, written in part, replicated xen ► file twice (one job planned from CBT, one whose
// source hides its change tracker, so the engine compares digests; both read over NBD); then the guest writes 4 KiB into 1 % of the
// 64 KiB blocks and each job runs again. Reported: wall time of each incremental, and the bytes
// the simulator's NBD server served for it (counted at the server, not by the driver).
import { randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DriverRegistry,
  defineDriver,
  FileStateStore,
  formatBytes,
  type Hypervisor,
  ReplicationEngine,
} from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';
import { createXenDriver, XEN_KIND_CAPABILITIES, xenDriver, xenDriverOptionsSchema } from '@replikit/driver-xen';
import { localTransport } from '@replikit/transport';
import { startXapiSim } from '@replikit/xapi-sim';

const BLOCK = 64 * 1024;
const STRIPE = 4 * 1024 * 1024;

/** The same driver, without its change tracker: what a source without CBT looks like. */
function withoutTracking(driver: Hypervisor): Hypervisor {
  const capabilities = { ...driver.capabilities, changeTracking: false };
  return new Proxy(driver, {
    get(target, property) {
      if (property === 'changeTracker') return undefined;
      if (property === 'capabilities') return capabilities;
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Runs the CBT ► hash-diff comparison on a `size`-byte disk, `allocated` of it written first. */
export async function cbtVersusHashDiff(size: number, allocated = 0.25): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-xen-cbt-'));
  const sim = await startXapiSim({ dir: join(dir, 'pool'), nbd: true });
  try {
    const session = (await sim.call('session.login_with_password', 'root', sim.credentials.password)) as string;
    const call = (method: string, ...args: unknown[]) => sim.call(method, session, ...args);
    const vm = (await call('VM.create', {
      name_label: 'bench-cbt',
      VCPUs_max: 2,
      memory_static_max: 2 ** 30,
    })) as string;
    const vdi = (await call('VDI.create', { SR: sim.refs.sr, virtual_size: size, type: 'user' })) as string;
    await call('VDI.enable_cbt', vdi);
    await call('VBD.create', { VM: vm, VDI: vdi, userdevice: '0', mode: 'RW', type: 'Disk' });
    await call('VM.start', vm, false, false); // the guest writes below need it running
    const stripe = new Uint8Array(STRIPE);
    for (let at = 0, i = 0; at < size; at += STRIPE, i++) {
      if (((i * 37) % 100) / 100 >= allocated) continue;
      randomFillSync(stripe);
      await sim.guestWrite(vm, '0', at, stripe.subarray(0, Math.min(STRIPE, size - at)));
    }
    const credentialsFile = join(dir, 'password');
    await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
    const source = { driver: 'xen', url: sim.url, credentialsFile, vm: 'bench-cbt' };
    const untracked = defineDriver({
      kind: 'xen',
      capabilities: XEN_KIND_CAPABILITIES,
      options: xenDriverOptionsSchema,
      create: async (options) => withoutTracking(await createXenDriver(options)),
    });
    const engines = {
      cbt: new ReplicationEngine({
        transport: localTransport(),
        stateStore: new FileStateStore(join(dir, 'state-cbt')),
        drivers: new DriverRegistry().register(xenDriver).register(fileDriver),
      }),
      'hash-diff': new ReplicationEngine({
        transport: localTransport(),
        stateStore: new FileStateStore(join(dir, 'state-hash')),
        drivers: new DriverRegistry().register(untracked).register(fileDriver),
      }),
    };
    const jobs = {
      // Method `cbt` is Xen ► Xen; into a file replica the Q-Hybrid job plans from CBT the same way.
      cbt: { name: 'bench-cbt', method: 'qhybrid' },
      'hash-diff': { name: 'bench-hash', method: 'qhybrid' },
    };
    const runOf = async (which: 'cbt' | 'hash-diff') => {
      const root = join(dir, `replicas-${which}`);
      await mkdir(root, { recursive: true });
      sim.nbdStats.reset();
      const start = process.hrtime.bigint();
      const record = await engines[which].run({
        ...jobs[which],
        source,
        target: { driver: 'file', root },
        options: { retention: 1 },
      });
      const took = seconds(start);
      if (record.outcome !== 'completed') throw new Error(`the ${which} run ended ${record.outcome}`);
      return { took, served: sim.nbdStats.total().bytes, modes: record.disks.map((d) => d.mode).join(',') };
    };
    try {
      await runOf('cbt');
      await runOf('hash-diff');
      let written = 0;
      const page = new Uint8Array(4096);
      for (let block = 0; block < Math.floor(size / BLOCK); block++) {
        if ((block * 2654435761) % 100 !== 0) continue;
        await sim.guestWrite(vm, '0', block * BLOCK + ((block * 7) % 16) * 4096, randomFillSync(page));
        written++;
      }
      const tracked = await runOf('cbt');
      const hashed = await runOf('hash-diff');
      console.log(
        `\nCBT incremental vs hash-diff, xen ► file: ${formatBytes(size)} disk, ${Math.round(allocated * 100)} % written, then 4 KiB into ${written} blocks (1 %)`,
      );
      console.log(
        `  cbt (${tracked.modes}): ${tracked.took.toFixed(2)} s, NBD served ${formatBytes(tracked.served)} (counted at the simulator)`,
      );
      console.log(
        `  hash-diff (${hashed.modes}): ${hashed.took.toFixed(2)} s, NBD served ${formatBytes(hashed.served)}`,
      );
      console.log(
        `  cbt is ${(hashed.took / tracked.took).toFixed(1)}x faster and reads ${(hashed.served / Math.max(1, tracked.served)).toFixed(0)}x fewer bytes (changed blocks: ${formatBytes(written * BLOCK)})`,
      );
    } finally {
      await engines.cbt.close();
      await engines['hash-diff'].close();
    }
  } finally {
    await sim.close();
    await rm(dir, { recursive: true, force: true });
  }
}
