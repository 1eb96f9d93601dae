import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatBytes, type Hypervisor, type JobSpecInput, parseJob } from '@replikit/core';
import { createHyperVDriver, hypervDriverOptionsSchema } from '@replikit/driver-hyperv';
import { adminCmdlet, createSimulatedHost, populateDemoHost, type SimulatedHyperVHost } from '@replikit/hyperv-sim';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { verifyRun } from '../demo/verify-run.js';
import { loadDriverPackages } from '../drivers.js';
import { renderRunSummary } from '../output/run-summary.js';
import { withProgress } from './run.js';

/** Options of `replikit demo --hyperv`. */
export interface DemoHyperVOptions {
  /** Keep the demo's folder (the simulated host, its replicas and the state) afterwards. */
  keep?: boolean;
}

const BLOCK = 64 * 1024;

/** One replication the demo makes: the source side of its job and how it writes like a guest. */
interface DemoPair {
  label: string;
  about: string;
  source: JobSpecInput['source'];
  /** The guest writes 4 KiB into about 1 % of the blocks of its first disk; resolves with the count. */
  guestWrites(seed: number): Promise<number>;
  /** A driver that reads the source's snapshots (for the verification). */
  reader: Hypervisor;
}

/**
 * `replikit demo --hyperv`: makes a simulated Hyper-V host (`@replikit/hyperv-sim`: a fake `pwsh`
 * and VHDX files in a folder, not Hyper-V) with VM `web-01` and two disks, and replicates it to a
 * replica VM on the same host: a full run, the guest writing into about 1 % of the blocks, an
 * incremental run that reads only what Resilient Change Tracking reports. Then a VM of a
 * simulated XenServer pool (`@replikit/xapi-sim`), also named `web-01`, is replicated to the
 * Hyper-V host the same way (Q-Hybrid, changed blocks from CBT). The replicas' VHDX go in the host's default
 * virtual hard disk folder (the jobs name no `replicaPath`). After each run every replica disk
 * must equal the snapshot it came from. Exit code 0 ("verification passed") when all are equal.
 */
export async function demoHyperVCommand(context: CliContext, options: DemoHyperVOptions = {}): Promise<number> {
  const out = context.stdout;
  const dir = await mkdtemp(join(tmpdir(), 'replikit-demo-hyperv-'));
  const closers: (() => Promise<void>)[] = [];
  try {
    const host = await createSimulatedHost(join(dir, 'host'));
    const demo = await populateDemoHost(host);
    out.write(
      `replikit demo --hyperv in ${dir}\n\nsimulated Hyper-V host in ${host.root} (a simulator, not Hyper-V: a fake pwsh that` +
        ` parses every script, VHDX files on disk)\nVM '${demo.vm}': ${demo.disks.map((d, i) => `disk ${i} ${formatBytes(d.size)}`).join(', ')}\n`,
    );
    const hyperv = { driver: 'hyperv', pwsh: host.pwsh };
    // One driver reads sources and replicas for the verification (one more fake pwsh).
    const verifier = await createHyperVDriver(hypervDriverOptionsSchema.parse({ pwsh: host.pwsh }));
    closers.push(() => verifier.close());
    const pairs: DemoPair[] = [
      {
        label: 'hyperv',
        about: 'hyperv ► hyperv: recovery checkpoints, changed ranges from RCT',
        source: { ...hyperv, vm: demo.vm },
        guestWrites: (seed) => hypervGuestWrites(host, demo.vm, demo.disks[0]!.size, seed),
        reader: verifier,
      },
    ];
    pairs.push(await xenPair(dir, closers));

    const engine = createEngine(join(dir, 'state'), context.env);
    closers.unshift(() => engine.close());
    let ok = true;
    for (const [n, pair] of pairs.entries()) {
      out.write(`\n── ${pair.about} ──\n`);
      const input: JobSpecInput = {
        name: `demo-hyperv-${pair.label}`,
        source: pair.source,
        target: { ...hyperv, replicaName: `web-01-from-${pair.label}`, networkMap: { LAN: 'LAN' } },
        method: 'qhybrid',
        blockSize: BLOCK,
        options: { retention: 2 },
      };
      const job = parseJob(input);
      await loadDriverPackages(job);
      for (const [step, label] of ['first run', 'after the guest writes'].entries()) {
        if (step === 1) {
          const written = await pair.guestWrites(9000 + n);
          out.write(`\n   the guest wrote 4 KiB into ${written} blocks (about 1 %)\n`);
        }
        const record = await withProgress(engine, context, () => engine.run(job, { signal: context.signal }));
        out.write(`\n   [${pair.label}] run ${step + 1} (${label})\n${renderRunSummary(record)}\n`);
        ok = (await verifyRun(context, record, pair.reader, verifier)) && ok;
      }
    }
    const { VirtualHardDiskPath } = (await adminCmdlet(host.root, 'Get-VMHost')) as { VirtualHardDiskPath: string };
    out.write(`\nthe replicas' VHDX files are in the host's default folder (Get-VMHost): ${VirtualHardDiskPath}\n`);
    out.write(
      ok
        ? '\nverification passed: every replica disk equals the source snapshot it came from\n'
        : '\nverification FAILED: a replica disk differs from its source snapshot\n',
    );
    if (options.keep) out.write(`the demo's files are kept in ${dir}\n`);
    return ok ? 0 : 1;
  } finally {
    for (const close of closers) await close().catch(() => undefined);
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  }
}

/** The guest of a simulated Hyper-V VM writes 4 KiB into about 1 % of the 64 KiB blocks of its first disk. */
async function hypervGuestWrites(host: SimulatedHyperVHost, vm: string, size: number, seed: number): Promise<number> {
  const blocks = Math.floor(size / BLOCK);
  const count = Math.max(1, Math.round(blocks / 100));
  const writes = Array.from({ length: count }, (_, i) => ({
    offset: ((seed * 7919 + i * 104_729) % blocks) * BLOCK,
    data: randomBytes(4096),
  }));
  await host.guestWrites(vm, 0, writes);
  return count;
}

/** XenServer ► Hyper-V: a simulated pool's VM `web-01` as the source. */
async function xenPair(dir: string, closers: (() => Promise<void>)[]): Promise<DemoPair> {
  const { populateDemo, startXapiSim } = await import('@replikit/xapi-sim');
  const { createXenDriver, xenDriverOptionsSchema } = await import('@replikit/driver-xen');
  await mkdir(join(dir, 'pool'));
  const sim = await startXapiSim({ dir: join(dir, 'pool') });
  closers.push(() => sim.close());
  const pool = await populateDemo(sim);
  // The pool's password goes in a file the job names: a job never holds a clear password.
  const credentialsFile = join(dir, 'pool-password');
  await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
  const reader = await createXenDriver(xenDriverOptionsSchema.parse({ url: sim.url, credentialsFile }));
  closers.unshift(() => reader.close());
  const vm = pool.vms['web-01']!;
  return {
    label: 'xen',
    about: `xen ► hyperv: VM 'web-01' of a simulated XenServer pool (${sim.url}), Q-Hybrid with CBT`,
    source: { driver: 'xen', url: sim.url, credentialsFile, vm: 'web-01' },
    reader,
    async guestWrites(seed) {
      const session = (await sim.call('session.login_with_password', 'root', sim.credentials.password)) as string;
      try {
        const [vbd] = (await sim.call('VM.get_VBDs', session, vm)) as string[];
        const vdi = (await sim.call('VBD.get_VDI', session, vbd)) as string;
        const size = Number(await sim.call('VDI.get_virtual_size', session, vdi));
        const blocks = Math.floor(size / BLOCK);
        const count = Math.max(1, Math.round(blocks / 100));
        for (let i = 0; i < count; i++) {
          await sim.guestWrite(vm, '0', ((seed * 7919 + i * 104_729) % blocks) * BLOCK, randomBytes(4096));
        }
        return count;
      } finally {
        await sim.call('session.logout', session);
      }
    },
  };
}
