import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  type DiskRef,
  DriverRegistry,
  defineDriver,
  FileStateStore,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { checkImage } from '@replikit/formats';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  envelopedScript,
  HYPERV_KIND_CAPABILITIES,
  HyperVDriver,
  type HyperVVMInfo,
  hypervDriverOptionsSchema,
  SOURCE_SCRIPTS,
  TARGET_SCRIPTS,
} from '../src/index.js';
import { FIXTURE_SCRIPTS, type SimHost, startSimHost } from './helpers/sim-host.js';

const run = promisify(execFile);
const MiB = 2 ** 20;
/** A VM name with quotes, `$()`, a backtick, `;`, a newline and non-ASCII characters. */
const HOSTILE = `app 'q' "d" $(Stop-Computer) \`n; Remove-Item C:\\\nGrüße 日本`;

/** qemu-img, when this machine has it (setup installs qemu-utils). */
async function qemuImg(): Promise<boolean> {
  return run('qemu-img', ['--version']).then(
    () => true,
    () => false,
  );
}

describe('the engine replicates a Hyper-V VM to a Hyper-V replica, incrementally through RCT', {
  timeout: 300_000,
}, () => {
  let sim: SimHost;
  let dir: string;
  beforeAll(async () => {
    sim = await startSimHost();
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-hyperv-'));
  }, 120_000);
  afterAll(async () => {
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('full, 1 % guest writes, tracked run reading only the changed ranges; replica equal to each checkpoint', async () => {
    const size = 16 * MiB + 1536;
    const [sourceBase] = await sim.makeVM(HOSTILE, [size, 2 * MiB], { generation: 1, cpus: 3 });
    await sim.addNic(HOSTILE, 'lan', 'LAN');
    await sim.addNic(HOSTILE, 'dmz', 'DMZ');
    const write = (disk: number, offset: number, length: number, seed: number) =>
      sim.host.guestWrite(HOSTILE, disk, offset, testPattern(seed, length));
    await write(0, 4095, 3 * MiB, 1);
    await write(0, size - 3, 3, 2);
    await write(1, 0, 512, 3);

    // Both sides drive the one simulated host through the file's one fake pwsh; the host counts
    // what is read from its VHDX files.
    const warnings: string[] = [];
    const drivers = new DriverRegistry().register(
      defineDriver({
        kind: 'hyperv',
        capabilities: HYPERV_KIND_CAPABILITIES,
        options: hypervDriverOptionsSchema,
        create: (options) =>
          new HyperVDriver({
            link: sim.link,
            sharedLink: true,
            rct: options.rct,
            openImage: (path) => sim.host.openDisk(path),
            target: {
              replicaPath: options.replicaPath,
              networkMap: options.networkMap,
              onWarning: (m) => warnings.push(m),
            },
          }),
      }),
    );
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      transport: localTransport(),
    });
    const replicaPath = join(sim.host.root, 'replicas');
    const job = {
      name: 'hyperv-to-hyperv',
      source: { driver: 'hyperv', vm: HOSTILE },
      target: { driver: 'hyperv', replicaPath, networkMap: { LAN: 'Replica LAN' }, replicaName: 'app-replica' },
      method: 'qhybrid',
    };
    const hv = sim.sharedDriver();
    const replicate = async (): Promise<RunRecord> => {
      const record = await engine.run(job);
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      // The replica equals the checkpoint the run read (the next run turns it into a reference point).
      for (const [i, disk] of record.snapshot!.disks.entries()) {
        const replicaDisk: DiskRef = record.replica!.disks[i]!;
        expect(compareBytes(await readWholeDisk(hv, replicaDisk), await readWholeDisk(hv, disk))).toBe('equal');
      }
      return record;
    };

    const first = await replicate();
    expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    const source = (await hv.getVM(HOSTILE)) as HyperVVMInfo;
    const replicaVm = (await hv.getVM(first.replica!.id)) as HyperVVMInfo;
    expect(replicaVm).toMatchObject({ generation: 1, cpus: 3, memoryMiB: 1024, powerState: 'stopped' });
    expect(replicaVm.disks.map((d) => d.size)).toEqual([size, 2 * MiB]);
    // The source's MACs, in order; LAN mapped, DMZ (and the unconnected adapter) disconnected.
    expect(replicaVm.nics.map((n) => n.macAddress)).toEqual(source.nics.map((n) => n.macAddress));
    expect(replicaVm.nics.map((n) => n.switchName)).toEqual([null, 'Replica LAN', null]);
    expect(warnings.join('\n')).toMatch(/'DMZ'.*networkMap/);
    expect(await hv.replicaMark(first.replica!)).toBe('ready');

    // qemu-img reads VHDX without a parent: the source checkpoint's frozen base and the replica's
    // first restore point (its base file) are compared by qemu too.
    const replicaDir = (await readdir(replicaPath)).map((name) => join(replicaPath, name))[0]!;
    const hasQemu = await qemuImg();
    if (hasQemu) {
      await run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', sourceBase!, join(replicaDir, 'disk-0.vhdx')]);
    }

    // 1 % of the big disk, at odd offsets and across block edges.
    const changed = Math.round(size / 100);
    const writes: [number, number][] = [
      [1, 10],
      [MiB - 5, changed - 20],
      [size - 4100, 10],
    ];
    for (const [i, [offset, length]] of writes.entries()) await write(0, offset, length, 4 + i);
    const before = new Map(sim.host.bytesRead());
    const second = await replicate();
    expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    // What the host saw read from the source disks' files in this run: opening a chain costs its
    // headers and BAT (the unchanged second disk shows that much), the first disk beyond that
    // exactly the 64 KiB blocks the guest writes touched.
    const sourceFiles = await sim.host.state();
    const sourceVm = sourceFiles.vms.find((v) => v.name === HOSTILE)!;
    const readOf = (disk: number) =>
      [...sim.host.bytesRead()]
        .filter(([path]) => path.startsWith(sourceVm.drives[disk]!.basePath.replace(/\.vhdx$/, '')))
        .reduce((sum, [path, n]) => sum + n - (before.get(path) ?? 0), 0);
    const opening = readOf(1);
    expect(opening).toBeLessThan(2 * MiB);
    const touched = new Set<number>();
    for (const [offset, length] of writes) {
      for (let b = Math.floor(offset / 65_536); b <= Math.floor((offset + length - 1) / 65_536); b++) touched.add(b);
    }
    const data = readOf(0) - opening;
    expect(data).toBeGreaterThanOrEqual(changed);
    expect(data).toBeLessThanOrEqual(touched.size * 65_536 + 4096);
    expect((await hv.listRestorePoints(second.replica!)).map((p) => p.label)).toEqual([first.runId, second.runId]);

    // Every VHDX written for the replica is sound: replikit's checker for all, qemu-img check for
    // those qemu opens (it has no support for differencing VHDX).
    const files = (await readdir(replicaDir)).filter((f) => /\.a?vhdx$/.test(f));
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const f of files) {
      const report = await checkImage(join(replicaDir, f));
      expect(report.problems, f).toEqual([]);
      expect(report.ok, f).toBe(true);
      if (hasQemu && f.endsWith('.vhdx')) await run('qemu-img', ['check', '-f', 'vhdx', join(replicaDir, f)]);
    }
    expect(await sim.host.guestRead(HOSTILE, 0, MiB - 5, 64)).toEqual(testPattern(5, changed - 20).subarray(0, 64));
    await engine.close();

    // Every script the fake pwsh received is one of the enumerated ones, and no name reached one.
    const log = await sim.host.scriptLog();
    const known = new Set([...SOURCE_SCRIPTS, ...TARGET_SCRIPTS, ...FIXTURE_SCRIPTS].map(envelopedScript));
    const sent = log.filter((e) => e.kind === 'script').map((e) => e.text);
    expect(sent.filter((text) => !known.has(text))).toEqual([]);
    for (const entry of log) {
      for (const part of ['Stop-Computer', 'Grüße', '日本', 'app-replica', 'Replica LAN']) {
        expect(entry.text.includes(part)).toBe(false);
      }
    }
  });
});
