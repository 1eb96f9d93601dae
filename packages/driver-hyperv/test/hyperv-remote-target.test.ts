import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DiskRef,
  DriverRegistry,
  defineDriver,
  FileStateStore,
  isReplikitError,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileDriver } from '@replikit/driver-file';
import { addRemoteHost, createSimulatedHost, type SimulatedHyperVHost } from '@replikit/hyperv-sim';
import { type Agent, createAgent, createRemoteTarget, localTransport, type Security } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHyperVDriver, HYPERV_KIND_CAPABILITIES, HyperVDriver, hypervDriverOptionsSchema } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;
const USER = 'CORP\\replikit';
const PASSWORD = 'target-host-password';
const KEY = randomBytes(32);
const SECURITY: Security = { kind: 'tls', psk: { identity: 'hv-dst', key: KEY } };
const VM = 'app-01';

describe('a Hyper-V target reached through PowerShell remoting and a replikit-agent', { timeout: 300_000 }, () => {
  let sim: SimHost;
  let controller: SimulatedHyperVHost;
  let agent: Agent | undefined;
  let port = 0;
  let dir: string;
  const env = { RK_HV_PASSWORD: PASSWORD, RK_HV_KEY: KEY.toString('hex') };

  /** Starts the host's agent (again on the same port after a kill). */
  const startAgent = async () => {
    agent = createAgent({
      target: createFileDriver({ root: join(dir, 'agent-replicas') }),
      security: SECURITY,
      hostFilesRoot: sim.host.root,
    });
    port = (await agent.listen({ host: '127.0.0.1', port })).port;
  };

  beforeAll(async () => {
    sim = await startSimHost();
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-remote-target-'));
    controller = await createSimulatedHost(join(dir, 'controller'));
    await addRemoteHost(controller.root, 'hv-dst', { root: sim.host.root, user: USER, password: PASSWORD });
    await startAgent();
  }, 120_000);
  afterAll(async () => {
    await agent?.stop();
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const targetOptions = () => ({
    pwsh: controller.pwsh,
    callTimeoutMs: 60_000,
    host: {
      computerName: 'HV-DST',
      user: USER,
      passwordEnv: 'RK_HV_PASSWORD',
      agent: { address: `127.0.0.1:${port}`, pskIdentity: 'hv-dst', pskKeyEnv: 'RK_HV_KEY' },
    },
  });

  it('replicates to the remote host: full, guest writes, incremental; a killed agent fails the run and a resume completes', async () => {
    const sizes = [24 * MiB + 512, 2 * MiB];
    await sim.makeVM(VM, sizes, { generation: 2, cpus: 2 });
    const write = (disk: number, offset: number, length: number, seed: number) =>
      sim.host.guestWrite(VM, disk, offset, testPattern(seed, length));
    await write(0, 4095, 20 * MiB, 1);
    await write(1, 0, 512, 2);

    const drivers = new DriverRegistry().register(
      defineDriver({
        kind: 'hyperv',
        capabilities: HYPERV_KIND_CAPABILITIES,
        options: hypervDriverOptionsSchema,
        create: (options, context) =>
          context.side === 'target'
            ? createHyperVDriver(options, { env })
            : new HyperVDriver({ link: sim.link, sharedLink: true, rct: options.rct }),
      }),
    );
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      transport: localTransport(),
    });
    const replicaPath = join(sim.host.root, 'replicas');
    const job = () => ({
      name: 'hyperv-to-remote-hyperv',
      source: { driver: 'hyperv', vm: VM },
      target: { driver: 'hyperv', replicaPath, replicaName: 'app-replica', ...targetOptions() },
      method: 'qhybrid',
    });
    // The host's own view: a driver on the host reading the replica's live VHDX with @replikit/formats.
    const local = sim.sharedDriver();
    const equal = async (record: RunRecord) => {
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      for (const [i, disk] of record.snapshot!.disks.entries()) {
        const replicaDisk: DiskRef = record.replica!.disks[i]!;
        expect(compareBytes(await readWholeDisk(local, replicaDisk), await readWholeDisk(local, disk))).toBe('equal');
      }
    };

    // A full run whose agent is stopped while it writes: the run fails with the transport's error
    // (its rollback cannot reach the host either, so the run stays unfinished, to be resumed).
    let killed: Promise<void> | undefined;
    let runId: string | undefined;
    const onProgress = (event: { runId: string; stats: { blocksChanged: number } }) => {
      runId = event.runId;
      if (!killed && event.stats.blocksChanged > 0) killed = agent!.stop();
    };
    engine.on('progress', onProgress);
    const cut = await engine.run(job()).then(
      () => undefined,
      (e: unknown) => e,
    );
    engine.off('progress', onProgress);
    expect(killed, 'the agent was stopped during the transfer').toBeDefined();
    await killed;
    expect(isReplikitError(cut, 'E_TRANSPORT'), String(cut)).toBe(true);
    // The cut run's replica is marked in progress and has no restore point.
    const [cutFolder] = await readdir(replicaPath);
    expect((await readFile(join(replicaPath, cutFolder!, 'replikit-mark'), 'utf8')).trim()).toBe('in-progress');
    expect(await readFile(join(replicaPath, cutFolder!, 'replikit-points.json'), 'utf8').catch(() => '[]')).toBe('[]');

    // With the agent back, a resume finishes the run's cleanup (it rolls the replica back) and
    // reports the run's error; the run has ended failed, nothing left to clean.
    await startAgent();
    const again = await engine.resume(runId!).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isReplikitError(again, 'E_TRANSPORT'), String(again)).toBe(true);
    const ended = await engine.resume(runId!);
    expect(ended.outcome).toBe('failed');
    expect(ended.cleanupError).toBeUndefined();
    // The next run replicates in full; the replica equals the source.
    const first = await engine.run(job());
    await equal(first);
    expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);

    await write(0, MiB - 7, 300_000, 3);
    await write(0, sizes[0]! - 100, 100, 4);
    const second = await engine.run(job());
    await equal(second);
    expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    const points = await local.listRestorePoints(second.replica!);
    expect(points.length).toBeGreaterThanOrEqual(2);
    // The replica's files are in its folder on the host; no pending or temporary file is left.
    const [folder] = await readdir(replicaPath);
    const names = await readdir(join(replicaPath, folder!));
    expect(names.filter((n) => /pending|\.tmp/.test(n))).toEqual([]);
    await engine.close();
  });

  it('the agent refuses a path outside its root for each write operation (E_INPUT), and links', async () => {
    const outside = join(dir, 'outside');
    await writeFile(join(dir, 'victim.vhdx'), 'keep');
    await symlink(dir, join(sim.host.root, 'escape-w'));
    await writeFile(join(sim.host.root, 'real.bin'), 'x');
    await symlink(join(dir, 'victim.vhdx'), join(sim.host.root, 'link.vhdx'));
    const target = createRemoteTarget({ kind: 'hyperv', address: { host: '127.0.0.1', port }, security: SECURITY });
    const files = target.hostFiles();
    const inside = join(sim.host.root, 'real.bin');
    const attempts: Record<string, Array<() => Promise<unknown>>> = {
      hostFolderMake: [
        () => files.makeFolder(join(outside, 'f')),
        () => files.makeFolder(join(sim.host.root, 'escape-w', 'f')),
      ],
      hostFileCreate: [
        () => files.createFile(join(dir, 'new.vhdx')),
        () => files.createFile(join(sim.host.root, '..', 'x')),
      ],
      hostFileWrite: [() => files.file(join(dir, 'victim.vhdx')).write(new Uint8Array(4), 0, 4, 0)],
      hostFileRead: [() => files.file(join(dir, 'victim.vhdx')).read(new Uint8Array(4), 0, 4, 0)],
      hostFileTruncate: [() => files.file(join(sim.host.root, 'escape-w', 'victim.vhdx')).truncate(0)],
      hostFileSync: [() => files.file(join(dir, 'victim.vhdx')).sync()],
      hostFileRename: [
        () => files.rename(inside, join(dir, 'moved')),
        () => files.rename(join(dir, 'victim.vhdx'), inside),
      ],
      hostFileRemove: [
        () => files.remove(join(dir, 'victim.vhdx')),
        () => files.remove(join(sim.host.root, 'escape-w', 'victim.vhdx')),
      ],
      hostFileStat: [() => files.stat(join(dir, 'victim.vhdx'))],
      hostFileList: [() => files.list(dir)],
    };
    try {
      for (const [op, list] of Object.entries(attempts)) {
        for (const attempt of list) {
          const error = await attempt().then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(isReplikitError(error, 'E_INPUT'), `${op}: ${String(error)}`).toBe(true);
          expect((error as Error).message, op).toMatch(/outside the agent's root/);
        }
      }
      // A symbolic link inside the root is never written, read, truncated or moved through.
      const link = join(sim.host.root, 'link.vhdx');
      for (const attempt of [
        () => files.file(link).write(new Uint8Array(4), 0, 4, 0),
        () => files.file(link).truncate(0),
        () => files.createFile(link),
        () => files.rename(link, join(sim.host.root, 'moved.vhdx')),
        () => files.stat(link),
      ]) {
        const error = await attempt().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isReplikitError(error, 'E_INPUT'), String(error)).toBe(true);
        expect((error as Error).message).toMatch(/symbolic link/);
      }
      // The root itself is never removed or renamed.
      const root = await files.remove(sim.host.root, true).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isReplikitError(root, 'E_INPUT'), String(root)).toBe(true);
      // Nothing outside changed.
      expect(await readdir(dir)).toContain('victim.vhdx');
    } finally {
      await target.close();
    }
  });
});
