import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FileStateStore,
  formatBytes,
  parseJob,
  parseSize,
  ReplicationEngine,
  type RunRecord,
  type Transport,
} from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { createFileDriver } from '@replikit/driver-file';
import { createAgent, createNetworkTransport, createPullTransport, type Security } from '@replikit/transport';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { createDemoVm, writeLikeAGuest } from '../demo/demo-data.js';
import { diskDigest } from '../demo/disk-digest.js';
import { registerBuiltinDrivers } from '../drivers.js';
import { renderRunSummary } from '../output/run-summary.js';
import { withProgress } from './run.js';

/** Options of `replikit demo --network`. */
export interface NetworkDemoOptions {
  /** Virtual size of the first disk. @default 128MiB */
  sizeA?: string;
  /** Virtual size of the second disk. @default 64MiB */
  sizeB?: string;
  /** Keep the demo folder (a fresh temporary folder) afterwards. */
  keep?: boolean;
}

const BLOCK = 64 * 1024;

async function verify(context: CliContext, record: RunRecord, roots: { vms: string; replicas: string }) {
  const source = createFileDriver({ root: roots.vms });
  const target = createFileDriver({ root: roots.replicas });
  let ok = true;
  try {
    for (const [i, disk] of record.snapshot!.disks.entries()) {
      const [want, got] = await Promise.all([diskDigest(source, disk), diskDigest(target, record.replica!.disks[i]!)]);
      ok &&= want === got;
      context.stdout.write(
        `  disk ${disk.id}: snapshot sha256 ${want.slice(0, 16)}…, replica ${got.slice(0, 16)}… ${want === got ? 'equal' : 'DIFFERENT'}\n`,
      );
    }
  } finally {
    await source.close();
    await target.close();
  }
  return ok;
}

/**
 * `replikit demo --network`: the demo over the network. Starts a `replikit-agent` for the replica
 * folder on 127.0.0.1, replicates the demo VM to it over TLS (pre-shared key) by push, lets the
 * guest change 2 % of its blocks, then replicates again by pull (the agent dials the source side),
 * and checks the replica against the source snapshot after each run. Exit code 0 when both pass.
 */
export async function demoNetworkCommand(context: CliContext, options: NetworkDemoOptions): Promise<number> {
  const sizeA = parseSize(options.sizeA ?? '128MiB', '--size-a');
  const sizeB = parseSize(options.sizeB ?? '64MiB', '--size-b');
  if (sizeA < 1024 * 1024 || sizeB < 1024 * 1024) throw new UsageError('--size-a and --size-b must be at least 1 MiB');
  const out = context.stdout;
  const dir = await mkdtemp(join(tmpdir(), 'replikit-demo-network-'));
  const roots = { vms: join(dir, 'vms'), replicas: join(dir, 'replicas') };
  const security: Security = { kind: 'tls', psk: { identity: 'demo', key: randomBytes(32) } };
  const agent = createAgent({
    target: createFileDriver({ root: roots.replicas, confine: true }),
    security,
    hasher: (algorithm) => createHashingPool({ algorithm }),
    log: (line) => out.write(`   [agent] ${line}\n`),
  });
  let transport: Transport | undefined;
  try {
    await mkdir(roots.vms, { recursive: true });
    await mkdir(roots.replicas, { recursive: true });
    out.write(
      `replikit network demo in ${dir}\n\n1. creating VM 'demo-vm' (${formatBytes(sizeA)} + ${formatBytes(sizeB)})\n`,
    );
    const images = await createDemoVm(roots.vms, sizeA, sizeB);

    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    out.write(`\n2. agent started on ${address.host}:${address.port} (TLS with a pre-shared key)\n`);
    registerBuiltinDrivers();
    // As `replikit run` does: xxh128 block digests hashed on every core, checked by the agent too.
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      digest: 'xxh128',
      hasher: (algorithm) => createHashingPool({ algorithm }),
      transport: () => transport!,
    });
    const job = parseJob({
      name: 'demo-network',
      source: { driver: 'file', root: roots.vms, vm: 'demo-vm' },
      target: { driver: 'file', root: roots.replicas, replicaName: 'demo-vm-replica' },
      method: 'qhybrid',
      blockSize: BLOCK,
      transport: { kind: 'tls' },
    });

    out.write('\n3. push: the source side connects to the agent and sends every block\n');
    transport = createNetworkTransport({ address, security });
    const pushed = await withProgress(engine, context, () => engine.run(job, { signal: context.signal }));
    out.write(`${renderRunSummary(pushed)}\n   verifying the replica\n`);
    const pushOk = await verify(context, pushed, roots);

    let changed = 0;
    for (const disk of images) {
      const vm = { root: roots.vms, name: 'demo-vm', diskId: disk.id, size: disk.size };
      changed += await writeLikeAGuest(vm, BLOCK, 0.02, 2000 + changed);
    }
    out.write(
      `\n4. the guest changed ${changed} blocks\n\n5. pull: the agent connects to the source side and asks for blocks\n`,
    );
    const pull = createPullTransport({ listen: { host: '127.0.0.1', port: 0 }, security });
    const pullAddress = await pull.listen();
    transport = pull;
    agent.pullFrom(pullAddress);
    let pulled: RunRecord;
    try {
      pulled = await withProgress(engine, context, () => engine.run(job, { signal: context.signal }));
    } finally {
      await pull.close();
    }
    out.write(`${renderRunSummary(pulled)}\n   verifying the replica\n`);
    const pullOk = await verify(context, pulled, roots);

    const ok = pushOk && pullOk;
    out.write(
      ok
        ? '\nverification passed: after the push and the pull run, the replica equals the source snapshot\n'
        : '\nverification FAILED: a replica disk differs from its source snapshot\n',
    );
    if (options.keep) out.write(`the demo's files are kept in ${dir}\n`);
    return ok ? 0 : 1;
  } finally {
    await agent.stop();
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  }
}
