// Method qhybrid, XenServer ► file, against the simulated demo pool of @replikit/xapi-sim:
// start the pool, replicate VM web-01 into a folder, let its guest write, replicate again (CBT
// tells which blocks changed), and check that the replica equals the source snapshot each time.
// Run it with `npm run example:xen-qhybrid`. On a real pool, put its URL, passwordEnv and
// fingerprint in `source` instead (see docs/xenserver.md).
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DiskRef, FileStateStore, type Hypervisor, ReplicationEngine, registerDriver } from '@replikit/core';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
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

const dir = await mkdtemp(join(tmpdir(), 'replikit-xen-qhybrid-'));
const sim = await startXapiSim({ dir: join(dir, 'pool'), nbd: true });
try {
  const pool = await populateDemo(sim);
  const credentialsFile = join(dir, 'password'); // a job names its password, never holds it
  await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
  registerDriver(xenDriver);
  registerDriver(fileDriver);
  const engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
  });
  const job = {
    name: 'web-to-folder',
    source: { driver: 'xen', url: sim.url, credentialsFile, vm: 'web-01' },
    target: { driver: 'file', root: join(dir, 'replicas') },
    method: 'qhybrid',
  };
  const xen = await createXenDriver(xenDriverOptionsSchema.parse({ url: sim.url, credentialsFile }));
  const folder = createFileDriver({ root: join(dir, 'replicas') });
  let ok = true;
  for (const step of ['full', 'incremental']) {
    if (step === 'incremental') await sim.guestWrite(pool.vms['web-01']!, '0', 5 << 20, new Uint8Array(4096).fill(7));
    const run = await engine.run(job);
    const same = [];
    for (const [i, disk] of run.snapshot!.disks.entries()) {
      same.push((await sha256(xen, disk)) === (await sha256(folder, run.replica!.disks[i]!)));
    }
    ok &&= same.every(Boolean);
    console.log(
      `${step}: ${run.disks.map((d) => `${d.mode} (${d.reason?.code})`).join(', ')}, sent ${run.stats.bytesSent} bytes, replica equal: ${same.every(Boolean)}`,
    );
  }
  await xen.close();
  await folder.close();
  await engine.close();
  if (!ok) throw new Error('a replica disk differs from its source snapshot');
  console.log('verification passed');
} finally {
  await sim.close();
  await rm(dir, { recursive: true, force: true });
}
