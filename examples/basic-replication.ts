// A complete replication with the library API, on the embedded file driver:
// create a VM, replicate it, change it, replicate again, print what each run sent.
// Run it with `npm run example:basic`.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, formatBytes, ReplicationEngine, registerDriver } from '@replikit/core';
import { createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';

const dir = await mkdtemp(join(tmpdir(), 'replikit-example-'));
try {
  registerDriver(fileDriver);
  await createFileVM(join(dir, 'vms'), { name: 'web', disks: [{ id: 'system', size: 64 * 1024 * 1024 }] });
  await writeGuestDisk(join(dir, 'vms'), 'web', 'system', 0, new Uint8Array(8 * 1024 * 1024).fill(42));

  const engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
  });
  engine.on('state', (event) => console.log(`  ${event.to}`));
  const job = {
    name: 'example',
    source: { driver: 'file', root: join(dir, 'vms'), vm: 'web' },
    target: { driver: 'file', root: join(dir, 'replicas') },
    method: 'qhybrid',
  };

  const first = await engine.run(job);
  console.log(`first run: ${first.disks[0]?.mode}, sent ${formatBytes(first.stats.bytesSent)}`);

  await writeGuestDisk(join(dir, 'vms'), 'web', 'system', 20 * 1024 * 1024, new Uint8Array(4096).fill(7));
  const second = await engine.run(job);
  console.log(`second run: ${second.disks[0]?.mode}, sent ${formatBytes(second.stats.bytesSent)}`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
