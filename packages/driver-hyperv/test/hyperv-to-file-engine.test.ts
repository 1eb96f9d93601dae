import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, defineDriver, FileStateStore, ReplicationEngine, type RunRecord } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createHyperVDriver,
  envelopedScript,
  HYPERV_KIND_CAPABILITIES,
  hypervDriverOptionsSchema,
  SOURCE_SCRIPTS,
} from '../src/index.js';
import { FIXTURE_SCRIPTS, type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;
/** A VM name with every character class a script must never see: quotes, `$()`, backticks, `;`, a newline, non-ASCII, 300 characters. */
const HOSTILE = `web 'q' "d" $(Stop-Computer) \`n; Remove-Item C:\\ -Recurse\nGrüße 日本 ${'x'.repeat(300)}`.slice(
  0,
  300,
);

/** A disk file name with quotes, `$()`, a backtick, `;`, a newline and non-ASCII characters. */
const HOSTILE_DISK = `d'1 "q" $(Get-Date) \`; \nÜber ✓`;

describe('the engine replicates a Hyper-V VM to the file driver, incrementally through RCT', {
  timeout: 300_000,
}, () => {
  let sim: SimHost;
  let dir: string;
  beforeEach(async () => {
    sim = await startSimHost();
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-file-'));
  });
  afterEach(async () => {
    await sim.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('full, 1 % guest writes, then a tracked run that reads only the changed ranges (counted by the host)', async () => {
    expect(HOSTILE.length).toBe(300);
    const size = 16 * MiB + 1536;
    const paths = await sim.makeVM(HOSTILE, [size, 2 * MiB], { diskName: HOSTILE_DISK });
    const write = (disk: number, offset: number, length: number, seed: number) =>
      sim.host.guestWrite(HOSTILE, disk, offset, testPattern(seed, length));
    await write(0, 4095, 3 * MiB, 1);
    await write(0, size - 3, 3, 2);
    await write(1, 0, 512, 3);

    // The host counts what the driver reads: the engine's driver opens VHDX files through it.
    const drivers = new DriverRegistry()
      .register(
        defineDriver({
          kind: 'hyperv',
          capabilities: HYPERV_KIND_CAPABILITIES,
          options: hypervDriverOptionsSchema,
          create: (options) => createHyperVDriver(options, { openImage: (path) => sim.host.openDisk(path) }),
        }),
      )
      .register(fileDriver);
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      transport: localTransport(),
    });
    const job = {
      name: 'hyperv-to-file',
      source: { driver: 'hyperv', vm: HOSTILE, pwsh: sim.host.pwsh },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false, replicaName: 'web-replica' },
      method: 'qhybrid',
    };
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const reader = await sim.driver();
    const run = async (): Promise<RunRecord> => {
      const record = await engine.run(job);
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      const replica = (await target.listVMs())[0]!;
      // The replica equals the snapshot the run read (converted into a reference point by the
      // next run, so compared now).
      for (const [i, disk] of record.snapshot!.disks.entries()) {
        const source = await readWholeDisk(reader, disk);
        expect(compareBytes(await readWholeDisk(target, replica.disks[i]!), source)).toBe('equal');
      }
      return record;
    };
    try {
      const first = await run();
      expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
      // 1 % of the big disk, at odd offsets and across block edges.
      const changed = Math.round(size / 100);
      const writes: [number, number][] = [
        [1, 10],
        [MiB - 5, changed - 20],
        [size - 4100, 10],
      ];
      for (const [i, [offset, length]] of writes.entries()) await write(0, offset, length, 4 + i);
      const before = new Map(sim.host.bytesRead());
      const second = await run();
      expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
      // What the host saw read from each disk's files in this run. Opening a VHDX chain costs its
      // headers and BAT (about 1 MiB here, whatever changed): the second disk, unchanged, shows it.
      const readOf = (disk: number) =>
        [...sim.host.bytesRead()]
          .filter(([path]) => path.startsWith(paths[disk]!.replace(/\.vhdx$/, '')))
          .reduce((sum, [path, n]) => sum + n - (before.get(path) ?? 0), 0);
      const opening = readOf(1);
      expect(opening).toBeLessThan(2 * MiB);
      // The first disk: beyond that, exactly the 64 KiB blocks the guest writes touched.
      const touched = new Set<number>();
      for (const [offset, length] of writes) {
        for (let b = Math.floor(offset / 65_536); b <= Math.floor((offset + length - 1) / 65_536); b++) touched.add(b);
      }
      const data = readOf(0) - opening;
      expect(data).toBeGreaterThanOrEqual(changed);
      expect(data).toBeLessThanOrEqual(touched.size * 65_536 + 4096);
      expect(await sim.host.guestRead(HOSTILE, 0, MiB - 5, 64)).toEqual(testPattern(5, changed - 20).subarray(0, 64));
    } finally {
      await engine.close();
      await target.close();
    }
    // The name never reached a script: every line and script the fake pwsh received is fixed text.
    const log = await sim.host.scriptLog();
    // Every script received is one of the driver's enumerated scripts (or a fixture's).
    const known = new Set([...SOURCE_SCRIPTS, ...FIXTURE_SCRIPTS].map(envelopedScript));
    const sent = log.filter((e) => e.kind === 'script').map((e) => e.text);
    expect(sent.length).toBeGreaterThan(20);
    expect(sent.filter((text) => !known.has(text))).toEqual([]);
    for (const entry of log) {
      for (const part of ['Stop-Computer', 'Grüße', '日本', 'x'.repeat(40), 'Get-Date', 'Über'])
        expect(entry.text.includes(part)).toBe(false);
    }
  });
});
