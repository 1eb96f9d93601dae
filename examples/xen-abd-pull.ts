// Method abd pulled, XenServer ► XenServer, against the simulated demo pool of @replikit/xapi-sim:
// the target's delegate appliance (ABD) connects to the source's and asks only for the blocks whose
// digests differ from the replica's (`options.direction: pull`, for a target site the source cannot
// reach). Here both sides are one pool, so they share one appliance. Replicate VM web-01, let the
// guest write, replicate again; each run's replica must equal the source snapshot. Run it with
// `npm run example:xen-abd-pull`. On real pools, give each side its pool's URL, passwordEnv,
// fingerprint and appliance addresses (see docs/xenserver.md).
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DiskRef, FileStateStore, type Hypervisor, ReplicationEngine, registerDriver } from '@replikit/core';
import { createXenDriver, xenDriver, xenDriverOptionsSchema } from '@replikit/driver-xen';
import { localTransport } from '@replikit/transport';
import { populateDemo, startXapiSim } from '@replikit/xapi-sim';

async function sha256(driver: Hypervisor, disk: DiskRef): Promise<string> {
  const reader = await driver.openReader(disk);
  const hash = createHash('sha256');
  for (let at = 0; at < reader.size; at += 4 << 20)
    hash.update(await reader.read(at, Math.min(4 << 20, reader.size - at)));
  await reader.close();
  return hash.digest('hex');
}

const dir = await mkdtemp(join(tmpdir(), 'replikit-xen-abd-pull-'));
const sim = await startXapiSim({ dir: join(dir, 'pool'), nbd: true });
try {
  const pool = await populateDemo(sim); // three VMs with CBT on their disks, and an appliance template
  const credentialsFile = join(dir, 'password'); // a job names its password, never holds it
  await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
  registerDriver(xenDriver);
  const engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
  });
  const xen = { driver: 'xen', url: sim.url, credentialsFile };
  const abd = { ips: ['127.0.0.81'] }; // free addresses for the pool's appliance
  const job = {
    name: 'web-abd-pull',
    source: { ...xen, vm: 'web-01', abd },
    target: { ...xen, replicaName: 'web-01-replica', abd },
    method: 'abd',
    options: { direction: 'pull' as const },
  };
  const reader = await createXenDriver(xenDriverOptionsSchema.parse({ url: sim.url, credentialsFile }));
  let ok = true;
  for (const step of ['full', 'incremental']) {
    if (step === 'incremental') {
      for (const at of [1 << 20, 5 << 20, 9 << 20]) {
        await sim.guestWrite(pool.vms['web-01']!, '0', at, new Uint8Array(65536).fill(7));
      }
    }
    const run = await engine.run(job);
    const same = [];
    for (const [i, disk] of run.snapshot!.disks.entries()) {
      same.push((await sha256(reader, disk)) === (await sha256(reader, run.replica!.disks[i]!)));
    }
    ok &&= same.every(Boolean);
    console.log(
      `${step}: ${run.disks.map((d) => `${d.mode} (${d.reason?.code})`).join(', ')}, pulled ${run.stats.bytesRead} bytes, replica equal: ${same.every(Boolean)}`,
    );
  }
  await reader.close();
  await engine.close();
  if (!ok) throw new Error('a replica disk differs from its source snapshot');
  console.log('verification passed');
} finally {
  await sim.close();
  await rm(dir, { recursive: true, force: true });
}
