import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type JobSpecInput, parseJob } from '@replikit/core';
import { createFileDriver } from '@replikit/driver-file';
import { createXenDriver, xenDriverOptionsSchema } from '@replikit/driver-xen';
import { populateDemo, startXapiSim, type XapiSim } from '@replikit/xapi-sim';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { verifyRun } from '../demo/verify-run.js';
import { loadDriverPackages } from '../drivers.js';
import { renderRunSummary } from '../output/run-summary.js';
import { withProgress } from './run.js';

/** One method `demo --xen` replicates with: where its replica goes. */
export interface XenDemoMethod {
  /** The job's method. */
  method: string;
  /** The target's driver kind. */
  target: 'xen' | 'file';
  /** What the method does, for the heading. */
  about: string;
}

/**
 * The methods `replikit demo --xen` runs, in order. Adding a method (once it lands on main) is
 * one line here.
 */
export const XEN_DEMO_METHODS: readonly XenDemoMethod[] = [
  { method: 'qhybrid', target: 'file', about: 'xen ► file: agentless reads, changed blocks from CBT' },
  { method: 'xva', target: 'xen', about: 'xen ► xen: the whole VM as an XVA each run, staged on the target SR' },
  { method: 'cbt', target: 'xen', about: 'xen ► xen: only the blocks CBT lists, read over NBD' },
  {
    method: 'abd',
    target: 'xen',
    about: 'xen ► xen: read through the source appliance, written through the target appliance',
  },
];

/** Options of `replikit demo --xen`. */
export interface DemoXenOptions {
  /** Keep the demo's folder (the pool's SRs, replicas and state) afterwards. */
  keep?: boolean;
  /** Only these methods (default: all of {@link XEN_DEMO_METHODS}). */
  methods?: readonly string[];
}

const VM = 'web-01';
const BLOCK = 64 * 1024;

/**
 * `replikit demo --xen`: starts the simulated XenServer pool of `@replikit/xapi-sim` in this
 * process, and for each method of {@link XEN_DEMO_METHODS} replicates its VM `web-01`: a full
 * run, the guest writing into about 1 % of the blocks, an incremental run. Each run prints its
 * table under the method's name and is verified: every replica disk must equal the snapshot it
 * came from. Exit code 0 ("verification passed") when all are equal, 1 otherwise.
 */
export async function demoXenCommand(context: CliContext, options: DemoXenOptions = {}): Promise<number> {
  const out = context.stdout;
  const dir = await mkdtemp(join(tmpdir(), 'replikit-demo-xen-'));
  let sim: XapiSim | undefined;
  try {
    await mkdir(join(dir, 'pool'));
    sim = await startXapiSim({ dir: join(dir, 'pool'), nbd: true });
    const pool = await populateDemo(sim);
    // The pool's password goes in a file the job names: a job never holds a clear password.
    const credentialsFile = join(dir, 'pool-password');
    await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
    const xen = { driver: 'xen', url: sim.url, credentialsFile };
    out.write(`replikit demo --xen in ${dir}\n\nsimulated pool at ${sim.url} (user root); replicating VM '${VM}'\n`);

    const engine = createEngine(join(dir, 'state'), context.env);
    const verifier = await createXenDriver(xenDriverOptionsSchema.parse({ url: sim.url, credentialsFile }), {
      targetPreview: true,
    });
    const methods = XEN_DEMO_METHODS.filter((m) => !options.methods || options.methods.includes(m.method));
    let ok = methods.length > 0;
    try {
      for (const [n, entry] of methods.entries()) {
        out.write(`\n── method ${entry.method} (${entry.about}) ──\n`);
        const replicas = join(dir, `replicas-${entry.method}`);
        const input: JobSpecInput = {
          name: `demo-xen-${entry.method}`,
          // Method abd reads through the pool's appliance too (one appliance serves both sides).
          source: entry.method === 'abd' ? { ...xen, vm: VM, abd: { ips: ['127.0.0.50'] } } : { ...xen, vm: VM },
          target:
            entry.target === 'file'
              ? { driver: 'file', root: replicas, replicaName: `${VM}-${entry.method}` }
              : { ...xen, replicaName: `${VM}-${entry.method}`, abd: { ips: ['127.0.0.50'] } },
          method: entry.method,
          blockSize: BLOCK,
          options: { retention: 2 },
        };
        if (entry.target === 'file') await mkdir(replicas, { recursive: true });
        const job = parseJob(input);
        await loadDriverPackages(job);
        const target = entry.target === 'file' ? createFileDriver({ root: replicas }) : verifier;
        try {
          for (const [step, label] of ['first run', 'after the guest writes'].entries()) {
            if (step === 1) {
              const { written, blocks } = await guestWrites(sim, pool.vms[VM]!, 7000 + n);
              const share = ((written / blocks) * 100).toFixed(1);
              out.write(
                `\n   the guest wrote 4 KiB into each of ${written} of its disk's ${blocks} blocks of 64 KiB (${share} %)\n`,
              );
            }
            const record = await withProgress(engine, context, () => engine.run(job, { signal: context.signal }));
            out.write(`\n   [${entry.method}] run ${step + 1} (${label})\n${renderRunSummary(record)}\n`);
            ok = (await verifyRun(context, record, verifier, target)) && ok;
          }
        } finally {
          if (target !== verifier) await target.close();
        }
      }
    } finally {
      await verifier.close();
      await engine.close();
    }
    out.write(
      ok
        ? '\nverification passed: every replica disk equals the source snapshot it came from\n'
        : '\nverification FAILED: a replica disk differs from its source snapshot\n',
    );
    if (options.keep) out.write(`the demo's files are kept in ${dir}\n`);
    return ok ? 0 : 1;
  } finally {
    await sim?.close();
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The guest of `vm` writes 4 KiB into each of about 1 % of the 64 KiB blocks of its first disk;
 * resolves with how many blocks it wrote into, of how many.
 */
async function guestWrites(sim: XapiSim, vm: string, seed: number): Promise<{ written: number; blocks: number }> {
  const session = (await sim.call('session.login_with_password', 'root', sim.credentials.password)) as string;
  try {
    const [vbd] = (await sim.call('VM.get_VBDs', session, vm)) as string[];
    const vdi = (await sim.call('VBD.get_VDI', session, vbd)) as string;
    const size = Number(await sim.call('VDI.get_virtual_size', session, vdi));
    const blocks = Math.floor(size / BLOCK);
    const count = Math.max(1, Math.round(blocks / 100));
    for (let i = 0; i < count; i++) {
      const block = (seed * 7919 + i * 104_729) % blocks;
      await sim.guestWrite(vm, '0', block * BLOCK, randomBytes(4096));
    }
    return { written: count, blocks };
  } finally {
    await sim.call('session.logout', session);
  }
}
