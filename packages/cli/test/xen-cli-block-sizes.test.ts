import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, type Hypervisor } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileDriver } from '@replikit/driver-file';
import { createXenDriver, xenDriverOptionsSchema } from '@replikit/driver-xen';
import { populateDemo, startXapiSim, type XapiSim } from '@replikit/xapi-sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCommand } from '../src/commands/run.js';
import type { CliContext } from '../src/context.js';
import { Capture } from './helpers/cli-harness.js';

/*
 * `replikit run` of Xen jobs as a user writes them, in YAML and in JSON, with block sizes as
 * strings ("4KiB", "16MiB"), on a VM of disks that are not a multiple of the block: a full run,
 * guest writes, an incremental run; after each, the replica equals the run's source snapshot.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES = [3 * MiB + 4 * KiB, MiB + 512];

const CASES = [
  { method: 'cbt', blockSize: '4KiB', format: 'yaml', target: 'xen' },
  { method: 'abd', blockSize: '16MiB', format: 'json', target: 'xen', pull: true },
  { method: 'qhybrid', blockSize: '1MiB', format: 'json', target: 'file' },
] as const;

describe('replikit run of xen jobs, YAML and JSON, at block sizes written as a user writes them', () => {
  let dir: string;
  let sim: XapiSim;
  let credentialsFile: string;
  let xen: Hypervisor;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-cli-xen-bs-'));
    sim = await startXapiSim({ dir, nbd: true });
    await populateDemo(sim);
    credentialsFile = join(dir, 'password');
    await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
    xen = await createXenDriver(xenDriverOptionsSchema.parse({ url: sim.url, credentialsFile }));
  });
  afterAll(async () => {
    await xen?.close();
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const call = async <T>(method: string, ...args: unknown[]): Promise<T> => {
    const session = (await sim.call('session.login_with_password', 'root', sim.credentials.password)) as string;
    try {
      return (await sim.call(method, session, ...args)) as T;
    } finally {
      await sim.call('session.logout', session);
    }
  };

  const context = (): CliContext & { out: Capture; err: Capture } => {
    const out = new Capture();
    const err = new Capture();
    return {
      out,
      err,
      stdout: out as unknown as NodeJS.WriteStream,
      stderr: err as unknown as NodeJS.WriteStream,
      cwd: dir,
      env: {},
      signal: new AbortController().signal,
    };
  };

  for (const [n, c] of CASES.entries()) {
    it(`${c.method}${'pull' in c ? ' pull' : ''} xen ► ${c.target}, blockSize "${c.blockSize}" in ${c.format}`, async () => {
      const name = `cli-bs-${n}`;
      const vm = (await call<string>('VM.create', { name_label: name })) as string;
      for (const [i, size] of SIZES.entries()) {
        const vdi = await call<string>('VDI.create', {
          name_label: `${name} ${i}`,
          SR: sim.refs.sr,
          virtual_size: size,
        });
        await call('VDI.enable_cbt', vdi);
        await call('VBD.create', { VM: vm, VDI: vdi, userdevice: String(i), mode: 'RW', type: 'Disk' });
      }
      await call('VM.start', vm, false, false);
      await sim.guestWrite(vm, '0', 4095, testPattern(n, 200_000));
      await sim.guestWrite(vm, '1', MiB - 3, testPattern(n + 1, 515));

      const side = { driver: 'xen', url: sim.url, credentialsFile };
      const abd = { abd: { ips: [`127.0.0.${80 + n}`] } };
      const replicas = join(dir, `replicas-${n}`);
      await mkdir(replicas, { recursive: true });
      const job = {
        name,
        source: { ...side, vm: name, ...(c.method === 'abd' ? abd : {}) },
        target:
          c.target === 'file'
            ? { driver: 'file', root: replicas, replicaName: `${name}-copy` }
            : { ...side, ...abd, replicaName: `${name}-copy` },
        method: c.method,
        blockSize: c.blockSize,
        ...('pull' in c ? { options: { direction: 'pull' } } : {}),
      };
      const file = join(dir, `${name}.${c.format}`);
      await writeFile(file, c.format === 'yaml' ? stringify(job) : JSON.stringify(job, null, 2));
      const state = join(dir, 'state');
      const targetHv: Hypervisor = c.target === 'file' ? createFileDriver({ root: replicas }) : xen;

      const runAndCheck = async () => {
        const ctx = context();
        expect(await runCommand(ctx, file, state), `${ctx.out.text}\n${ctx.err.text}`).toBe(0);
        const runs = (await new FileStateStore(state).listRuns()).filter((r) => r.job.name === name);
        const last = runs.at(-1)!;
        const snapshot = last.stages.snapshot!.snapshot;
        const copy = await targetHv.getVM(last.stages.prepare!.replica.id);
        expect(copy.disks.map((d) => d.size)).toEqual(SIZES);
        for (const [i, disk] of copy.disks.entries()) {
          const expected = await readWholeDisk(xen, snapshot.disks[i]!);
          expect(compareBytes(await readWholeDisk(targetHv, disk), expected), `disk ${i}`).toBe('equal');
        }
        return ctx.out.text;
      };
      try {
        expect(await runAndCheck()).toMatch(/\bfull\b/);
        await sim.guestWrite(vm, '0', 3 * MiB + 4 * KiB - 1, testPattern(n + 2, 1));
        await sim.guestWrite(vm, '0', 64 * KiB - 2, testPattern(n + 3, 5000));
        await sim.guestWrite(vm, '1', MiB + 511, testPattern(n + 4, 1));
        expect(await runAndCheck()).not.toMatch(/\bfull\b/);
      } finally {
        if (targetHv !== xen) await targetHv.close();
      }
    });
  }
});
