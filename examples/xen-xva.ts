// Method xva, XenServer ► XenServer, against the simulated demo pool of @replikit/xapi-sim: each
// run exports the snapshot of VM web-01 as an XVA, stages it on the target SR (which must have
// the VM's size free: rule xva-needs-staging) and imports it as the replica's next version.
// Run it with `npm run example:xen-xva`. On a real pool, see docs/xenserver.md.
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

const dir = await mkdtemp(join(tmpdir(), 'replikit-xen-xva-'));
const sim = await startXapiSim({ dir: join(dir, 'pool'), nbd: true });
try {
  const pool = await populateDemo(sim);
  const credentialsFile = join(dir, 'password');
  await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
  registerDriver(xenDriver);
  const engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
  });
  const xenSide = { driver: 'xen', url: sim.url, credentialsFile };
  const job = {
    name: 'web-xva',
    source: { ...xenSide, vm: 'web-01' },
    // A XenServer target declares its delegate appliance (rule xen-target-needs-abd); XVA itself
    // imports through XAPI and does not start it.
    target: { ...xenSide, abd: { ips: ['127.0.0.50'] } },
    method: 'xva',
  };
  // Reads replica disks too (the replica hooks on), to verify them.
  const xen = await createXenDriver(xenDriverOptionsSchema.parse({ url: sim.url, credentialsFile }), {
    targetPreview: true,
  });
  let ok = true;
  for (const step of ['first', 'second']) {
    if (step === 'second') await sim.guestWrite(pool.vms['web-01']!, '0', 5 << 20, new Uint8Array(4096).fill(7));
    const run = await engine.run(job);
    const same = [];
    for (const [i, disk] of run.snapshot!.disks.entries()) {
      same.push((await sha256(xen, disk)) === (await sha256(xen, run.replica!.disks[i]!)));
    }
    ok &&= same.every(Boolean);
    console.log(
      `${step} run: ${run.disks.map((d) => `${d.mode} (${d.reason?.code})`).join(', ')}, XVA of ${run.stats.bytesRead} bytes, replica equal: ${same.every(Boolean)}`,
    );
  }
  await xen.close();
  await engine.close();
  if (!ok) throw new Error('a replica disk differs from its source snapshot');
  console.log('verification passed');
} finally {
  await sim.close();
  await rm(dir, { recursive: true, force: true });
}
