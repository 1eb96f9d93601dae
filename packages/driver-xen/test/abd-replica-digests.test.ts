import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type BlockDigest,
  DriverRegistry,
  FileStateStore,
  type ReplicaSpec,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createHashingPool } from '@replikit/dedup';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';
import { PASSWORD_ENV } from './helpers/xen-pool.js';

/*
 * Issue 17, ABD without a replication cache: in a hash-diff run the replica's digests are
 * computed by the target appliance next to the replica (its committed VDI plugged read-only into
 * it), so no replica byte crosses to the engine's host. Counted where the simulator's NBD server
 * serves the committed VDIs: nothing. The replica still equals the source snapshot, and nothing
 * stays plugged into the appliance.
 */

const MiB = 1024 * 1024;

describe('xen ► xen abd without a cache: the target appliance digests the replica', () => {
  let pool: AbdPool | undefined;
  let dir: string | undefined;
  let xen: XenDriver | undefined;
  let engine: ReplicationEngine | undefined;
  afterEach(async () => {
    await engine?.close();
    await xen?.close();
    await pool?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const digest of ['sha256', 'xxh128'] as const) {
    it(`a hash-diff run (${digest} digests) reads 0 bytes of the replica over NBD, and the replica equals the snapshot`, async () => {
      pool = await startAbdPool();
      const sim = pool;
      dir = await mkdtemp(join(tmpdir(), 'rk-abd-digests-'));
      xen = await sim.driver();
      const vm = await sim.makeVM('web digests', [8 * MiB, 3 * MiB + 512]);
      const disks = (await xen.getVM(vm.uuid)).disks;
      await sim.writeGuest(vm.uuid, disks[0]!.id, 4095, testPattern(1, 300_000));
      await sim.writeGuest(vm.uuid, disks[1]!.id, 3 * MiB - 7, testPattern(2, 519));
      engine = new ReplicationEngine({
        stateStore: new FileStateStore(join(dir, 'state')),
        drivers: new DriverRegistry().register(xenDriver),
        ruleSets: [],
        transport: localTransport(),
        // xxh128 is what `replikit run` hashes with: the appliance's agent hashes it with its own pool.
        ...(digest === 'xxh128' ? { digest, hasher: (algorithm: string) => createHashingPool({ algorithm }) } : {}),
      });
      const endpoint = { driver: 'xen', url: sim.sim.url, passwordEnv: PASSWORD_ENV, abd: { ips: sim.ips } };
      const job = {
        name: 'abd-digests',
        source: { ...endpoint, vm: 'web digests' },
        target: { ...endpoint, replicaName: 'abd-digests' },
        method: 'abd',
      };
      const run = async (): Promise<RunRecord> => {
        const record = await engine!.run(job);
        expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
        return record;
      };
      const expectReplica = async (record: RunRecord) => {
        const info = await xen!.getVM(record.replica!.id);
        for (const [i, disk] of info.disks.entries()) {
          const snapshot = await readWholeDisk(xen!, record.snapshot!.disks[i]!);
          expect(compareBytes(await readWholeDisk(xen!, disk), snapshot)).toBe('equal');
        }
      };

      const first = await run();
      expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);

      // The committed VDIs the second run compares with (what the replica reads as now).
      const replicaRef = await sim.call<string>('VM.get_by_uuid', first.replica!.id);
      const committed: string[] = [];
      for (const vbd of await sim.call<string[]>('VM.get_VBDs', replicaRef)) {
        const vdi = await sim.call<string>('VBD.get_VDI', vbd);
        if (vdi !== 'OpaqueRef:NULL') committed.push(await sim.call<string>('VDI.get_uuid', vdi));
      }
      expect(committed).toHaveLength(2);

      // A CBT reset makes the next run a hash-diff: the replica's digests are needed.
      for (const disk of disks) {
        const live = await sim.call<string>('VDI.get_by_uuid', disk.id);
        await sim.call('VDI.disable_cbt', live);
        await sim.call('VDI.enable_cbt', live);
      }
      await sim.writeGuest(vm.uuid, disks[0]!.id, 5 * MiB + 3, testPattern(3, 4096));
      sim.sim.nbdStats.reset();
      const second = await run();
      expect(second.disks.map((d) => [d.mode, d.digestSource])).toEqual([
        ['hash-diff', 'replica'],
        ['hash-diff', 'replica'],
      ]);
      expect(committed.map((uuid) => sim.sim.nbdStats.of(uuid).bytes)).toEqual([0, 0]);
      // Only the changed block crossed: one block of disk 0, none of disk 1.
      expect(second.disks.map((d) => d.stats.blocksChanged)).toEqual([1, 0]);
      expect(await sim.pluggedIntoAppliances()).toEqual([]);
      expect(await sim.applianceVbds()).toEqual([]);
      expect(second.digest).toBe(digest);
      await expectReplica(second);
    }, 180_000);
  }

  it("the driver's digests are those of what its reader reads; a walk stopped early or aborted leaves nothing plugged", async () => {
    pool = await startAbdPool();
    const sim = pool;
    dir = await mkdtemp(join(tmpdir(), 'rk-abd-digests-'));
    xen = await sim.driver({ abd: { ips: sim.ips } }, { side: 'target', method: 'abd' });
    const vm = await sim.makeVM('web shape', [3 * MiB + 512]);
    const source = await xen.getVM(vm.uuid);
    const spec: ReplicaSpec = {
      name: 'digests-replica',
      source,
      disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    };
    const replica = await xen.ensureReplica(spec);
    const disk = replica.disks[0]!;
    const write = async (runId: string, offset: number, data: Uint8Array) => {
      const writer = await xen!.openWriter(replica, disk, { runId });
      await writer.write(offset, data);
      await writer.flush();
      await writer.close();
    };
    await write('r1', 3 * MiB, testPattern(5, 512));
    await xen.createRestorePoint(replica, 'one');
    // Pending writes of a later run are not what the reader reads: the digests leave them out too.
    await write('r2', 2 * MiB + 99, testPattern(6, 4096));
    const blockSize = 1024 * 1024;
    const bytes = await readWholeDisk(xen, disk);
    const hasher = createNodeHasher('sha256');
    const expected: BlockDigest[] = [];
    for (let i = 1; i * blockSize < bytes.length; i++) {
      const block = bytes.subarray(i * blockSize, Math.min((i + 1) * blockSize, bytes.length));
      expected.push({ index: i, digest: block.every((b) => b === 0) ? null : (await hasher.hash([block]))[0]! });
    }
    expect(expected.map((d) => d.digest === null)).toEqual([true, true, false]);
    const from = { fromBlock: 1, blockSize, algorithm: 'sha256' };

    const walked: BlockDigest[] = [];
    for await (const d of xen.replicaDigests!(disk, from)!) walked.push(d);
    expect(walked).toEqual(expected);
    expect(await sim.pluggedIntoAppliances()).toEqual([]);

    for await (const _ of xen.replicaDigests!(disk, from)!) break;
    expect(await sim.pluggedIntoAppliances()).toEqual([]);

    const controller = new AbortController();
    const aborted = (async () => {
      for await (const _ of xen.replicaDigests!(disk, { ...from, fromBlock: 0 }, { signal: controller.signal })!) {
        controller.abort(new Error('stop'));
      }
    })();
    await expect(aborted).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect(await sim.pluggedIntoAppliances()).toEqual([]);

    // xxh128, the CLI's digest: the appliance's agent lists read-digests-hasher and hashes it.
    const xxh = await createHashingPool({ algorithm: 'xxh128' });
    try {
      const xxhWalked: BlockDigest[] = [];
      for await (const d of xen.replicaDigests!(disk, { ...from, algorithm: 'xxh128' })!) xxhWalked.push(d);
      const xxhExpected: BlockDigest[] = [];
      for (const e of expected) {
        const block = bytes.subarray(e.index * blockSize, Math.min((e.index + 1) * blockSize, bytes.length));
        xxhExpected.push({ index: e.index, digest: e.digest === null ? null : (await xxh.hash([block]))[0]! });
      }
      const hex = (list: BlockDigest[]) =>
        list.map((d) => [d.index, d.digest === null ? null : Buffer.from(d.digest).toString('hex')]);
      expect(hex(xxhWalked)).toEqual(hex(xxhExpected));
    } finally {
      await xxh.close?.();
    }
    expect(await sim.pluggedIntoAppliances()).toEqual([]);
    const plain = await sim.driver({}, { side: 'target', method: 'cbt' });
    expect(plain.replicaDigests).toBeUndefined(); // no abd section: the engine reads over NBD
    await plain.close();
  }, 180_000);
});
