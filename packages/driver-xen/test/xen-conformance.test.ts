import { runDriverConformance } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll } from 'vitest';
import { poolFixtures, startPool, type TestPool } from './helpers/xen-pool.js';

// Conformance v2, xen as source and as target (no case skips): once with CBT on the VMs' disks,
// once without. Disk sizes are rounded up to 512 bytes by the fixture, as XenServer's storage
// managers do.
for (const cbt of [true, false]) {
  let pool: TestPool;
  beforeAll(async () => {
    pool = await startPool();
  });
  afterAll(async () => {
    await pool?.close();
  });
  runDriverConformance({
    name: `xen (source and target, CBT ${cbt ? 'on' : 'off'})`,
    create: () => pool.driver(),
    fixtures: poolFixtures(() => pool, cbt),
    transport: localTransport(),
    trackedVMs: cbt,
    // allocated() comes from the VHD block table: 2 MiB blocks, so a 4 MiB disk written in both
    // halves is all allocated. Real VDIs are far larger; 8 MiB shows the sparseness.
    diskSize: 8 * 1024 * 1024,
  });
}
