// XenServer ► Hyper-V with Q-Hybrid: VM web-01 of the simulated demo pool (@replikit/xapi-sim) is
// replicated to a replica VM on a Hyper-V host: by default a simulated one (@replikit/hyperv-sim: a
// fake `pwsh` that parses every script and VHDX files in a folder; a simulator, not Hyper-V). The
// firmware maps (BIOS → generation 1, UEFI → 2), the MACs are kept; the guest writes, the second
// run reads only the blocks CBT reports. After each run every replica disk must equal the source snapshot.
// Run it with `npm run example:xen-to-hyperv`.
//
// Live mode, with a real Hyper-V host as the target, when REPLIKIT_HYPERV_HOST is set: `local` (this
// machine is the host) or the host's name for PowerShell remoting, with REPLIKIT_HYPERV_USER and
// REPLIKIT_HYPERV_PASSWORD, and REPLIKIT_HYPERV_AGENT (HOST:PORT of its `replikit-agent --host-files`),
// REPLIKIT_HYPERV_AGENT_IDENTITY, REPLIKIT_HYPERV_AGENT_KEY; REPLIKIT_HYPERV_REPLICA_PATH optional.
// The source stays the simulated pool; for a real pool see docs/xenserver.md and docs/hyperv.md.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DiskRef, FileStateStore, type Hypervisor, ReplicationEngine, registerDriver } from '@replikit/core';
import { createHyperVDriver, hypervDriver, hypervDriverOptionsSchema } from '@replikit/driver-hyperv';
import { createXenDriver, xenDriver, xenDriverOptionsSchema } from '@replikit/driver-xen';
import { createSimulatedHost } from '@replikit/hyperv-sim';
import { localTransport } from '@replikit/transport';
import { populateDemo, startXapiSim } from '@replikit/xapi-sim';
import { liveHost } from './hyperv-live-host.js';

async function sha256(driver: Hypervisor, disk: DiskRef): Promise<string> {
  const reader = await driver.openReader(disk);
  const hash = createHash('sha256');
  for (let at = 0; at < reader.size; at += 4 << 20)
    hash.update(await reader.read(at, Math.min(4 << 20, reader.size - at)));
  await reader.close();
  return hash.digest('hex');
}

const dir = await mkdtemp(join(tmpdir(), 'replikit-xen-to-hyperv-'));
await mkdir(join(dir, 'pool'));
const sim = await startXapiSim({ dir: join(dir, 'pool'), nbd: true });
try {
  const pool = await populateDemo(sim);
  const credentialsFile = join(dir, 'password'); // a job names its password, never holds it
  await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
  const live = process.env.REPLIKIT_HYPERV_HOST !== undefined;
  const host = live ? undefined : await createSimulatedHost(join(dir, 'host'));
  const hyperv = host ? { pwsh: host.pwsh } : liveHost(process.env);
  const replicaPath = host ? join(host.root, 'replicas') : process.env.REPLIKIT_HYPERV_REPLICA_PATH;
  registerDriver(xenDriver);
  registerDriver(hypervDriver);
  const engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
  });
  const job = {
    name: 'xen-to-hyperv-example',
    source: { driver: 'xen', url: sim.url, credentialsFile, vm: 'web-01' },
    target: { driver: 'hyperv', ...hyperv, replicaName: 'web-01-from-xen', ...(replicaPath ? { replicaPath } : {}) },
    method: 'qhybrid', // XenServer ► Hyper-V works only with Q-Hybrid (rule xen-to-hyperv-needs-qhybrid)
  };
  const xen = await createXenDriver(xenDriverOptionsSchema.parse({ url: sim.url, credentialsFile }));
  const target = await createHyperVDriver(hypervDriverOptionsSchema.parse(hyperv));
  let ok = true;
  let replicaVm = '';
  for (const step of ['full', 'incremental']) {
    if (step === 'incremental') await sim.guestWrite(pool.vms['web-01']!, '0', 5 << 20, new Uint8Array(4096).fill(7));
    const run = await engine.run(job);
    if (run.state !== 'completed') throw new Error(`the ${step} run ended ${run.state}: ${run.error?.message}`);
    const same = [];
    for (const [i, disk] of run.snapshot!.disks.entries()) {
      same.push((await sha256(xen, disk)) === (await sha256(target, run.replica!.disks[i]!)));
    }
    ok &&= same.every(Boolean);
    replicaVm = (run.replica!.meta as { vm: string }).vm;
    console.log(
      `${step}: ${run.disks.map((d) => `${d.mode} (${d.reason?.code})`).join(', ')}, sent ${run.stats.bytesSent} bytes, replica equal: ${same.every(Boolean)}`,
    );
  }
  const source = await xen.getVM('web-01');
  const replica = await target.getVM(replicaVm);
  console.log(
    `source: ${source.firmware}, MACs ${(source.macs ?? []).join(', ')}; replica VM '${replicaVm}': generation ${replica.firmware === 'uefi' ? 2 : 1}, MACs ${(replica.macs ?? []).join(', ')}`,
  );
  await xen.close();
  await target.close();
  await engine.close();
  if (!ok) throw new Error('a replica disk differs from its source snapshot');
  console.log('verification passed');
} finally {
  await sim.close();
  await rm(dir, { recursive: true, force: true });
}
