// Hyper-V ► Hyper-V with Resilient Change Tracking. By default against a simulated Hyper-V host
// (@replikit/hyperv-sim: a fake `pwsh` that parses every script and VHDX files in a folder; a
// simulator, not Hyper-V): replicate VM web-01 to a replica VM on the same host, let its guest
// write, replicate again (RCT tells which ranges changed), and check after each run that every
// replica disk equals the source checkpoint it came from. Run it with `npm run example:hyperv-rct`.
//
// Live mode, on a real host, when REPLIKIT_HYPERV_HOST is set (see docs/hyperv.md):
//   REPLIKIT_HYPERV_HOST     `local` (replikit runs on the host) or the host's name (PowerShell remoting)
//   REPLIKIT_HYPERV_VM       the source VM (required)
//   REPLIKIT_HYPERV_USER     remoting only: the user; its password in REPLIKIT_HYPERV_PASSWORD
//   REPLIKIT_HYPERV_AGENT    remoting only: the host's `replikit-agent --host-files` as HOST:PORT, with
//                            REPLIKIT_HYPERV_AGENT_IDENTITY and the key in REPLIKIT_HYPERV_AGENT_KEY
//   REPLIKIT_HYPERV_REPLICA_PATH  where the replica's VHDX go (unset: the host's default folder)
// Live mode makes no guest writes: the second run sends what the VM's guest changed meanwhile.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DiskRef, FileStateStore, type Hypervisor, ReplicationEngine, registerDriver } from '@replikit/core';
import { createHyperVDriver, hypervDriver, hypervDriverOptionsSchema } from '@replikit/driver-hyperv';
import { createSimulatedHost, populateDemoHost } from '@replikit/hyperv-sim';
import { localTransport } from '@replikit/transport';
import { liveHost } from './hyperv-live-host.js';

async function sha256(driver: Hypervisor, disk: DiskRef): Promise<string> {
  const reader = await driver.openReader(disk);
  const hash = createHash('sha256');
  for (let at = 0; at < reader.size; at += 4 << 20)
    hash.update(await reader.read(at, Math.min(4 << 20, reader.size - at)));
  await reader.close();
  return hash.digest('hex');
}

const live = process.env.REPLIKIT_HYPERV_HOST !== undefined;
if (live && !process.env.REPLIKIT_HYPERV_VM) throw new Error('live mode needs REPLIKIT_HYPERV_VM, the source VM');
const dir = await mkdtemp(join(tmpdir(), 'replikit-hyperv-rct-'));
try {
  const host = live ? undefined : await createSimulatedHost(join(dir, 'host'));
  const demo = host ? await populateDemoHost(host) : undefined;
  const endpoint = host ? { pwsh: host.pwsh } : liveHost(process.env);
  const vm = demo?.vm ?? process.env.REPLIKIT_HYPERV_VM!;
  registerDriver(hypervDriver);
  const engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
  });
  const replicaPath = host ? join(host.root, 'replicas') : process.env.REPLIKIT_HYPERV_REPLICA_PATH;
  const job = {
    name: 'hyperv-rct-example',
    source: { driver: 'hyperv', ...endpoint, vm },
    target: {
      driver: 'hyperv',
      ...endpoint,
      replicaName: `${vm}-replikit-example`,
      ...(host ? { networkMap: { LAN: 'LAN' } } : {}),
      ...(replicaPath ? { replicaPath } : {}),
    },
    method: 'qhybrid',
    options: { retention: 2 },
  };
  // One more driver reads the source checkpoints and the replicas for the check.
  const reader = await createHyperVDriver(hypervDriverOptionsSchema.parse(endpoint));
  let ok = true;
  for (const step of ['full', 'incremental']) {
    if (step === 'incremental' && host) {
      for (let i = 0; i < 8; i++)
        await host.guestWrite(vm, 0, (1 + i * 2) * (1 << 20), new Uint8Array(4096).fill(i + 1));
    }
    const run = await engine.run(job);
    if (run.state !== 'completed') throw new Error(`the ${step} run ended ${run.state}: ${run.error?.message}`);
    const same = [];
    for (const [i, disk] of run.snapshot!.disks.entries()) {
      same.push((await sha256(reader, disk)) === (await sha256(reader, run.replica!.disks[i]!)));
    }
    ok &&= same.every(Boolean);
    console.log(
      `${step}: ${run.disks.map((d) => `${d.mode} (${d.reason?.code})`).join(', ')}, read ${run.stats.bytesRead} bytes, sent ${run.stats.bytesSent}, replica equal: ${same.every(Boolean)}`,
    );
  }
  await reader.close();
  await engine.close();
  if (!ok) throw new Error('a replica disk differs from its source checkpoint');
  console.log('verification passed');
} finally {
  await rm(dir, { recursive: true, force: true });
}
