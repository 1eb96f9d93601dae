import { readSync } from 'node:fs';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DiskRef, Extent, Hypervisor, Replica, ReplicaSpec, VMInfo } from '../contracts/index.js';
import type { ErrorCode } from '../errors.js';
import { checkAbortHonoured, checkChangeTrackerModel, checkCloseReleases } from './conformance-checks.js';
import type { DriverConformanceOptions } from './conformance-types.js';
import { checkEngineEndToEnd } from './engine-check.js';
import { defineFailoverCases } from './failover-checks.js';
import { defineReverseCases } from './reverse-checks.js';
import { compareBytes, readWholeDisk, testPattern } from './test-data.js';
import { checkCapabilitiesAgree, checkConcurrentWrites } from './write-and-capability-checks.js';

const MiB = 1024 * 1024;

/**
 * The conformance suite every replikit driver runs: a vitest `describe` block that checks the
 * behaviour the engine relies on, through the {@link Hypervisor} contract only.
 *
 * Cases: sane capabilities; `getVM`/`listVMs` and `E_NOT_FOUND`; snapshots frozen at one instant
 * across disks and usable after a JSON round trip; reads at odd offsets and sizes (and, where a
 * reader names them, its file spans), and `E_INPUT`
 * outside the disk; sparse `allocated()` extents; replica writes (with `writeZeroes`) read back
 * after a restore point; replica marking and `E_REPLICA_IN_PROGRESS`; restore points, retention
 * and revert; fingerprints that change on boot and outside writes only; `ensureReplica`
 * idempotence; one writer per disk; bad input; a replica held by one run at a time (atomic claims,
 * re-taken by the same run id, other runs' writers refused) and writes pending from another run
 * that change the fingerprint and are dropped, never continued or committed; a change tracker whose
 * extents cover every changed byte (see {@link checkChangeTrackerModel}); `E_ABORTED` from every
 * long method; `close()` closing what it handed out; concurrent writes to disjoint ranges; capabilities
 * that agree with what the driver does; and the engine end to end through the driver (a full run,
 * guest writes, an incremental run tracked and one by hash diff, the replica equal to the source
 * snapshot: see {@link checkEngineEndToEnd}). Cases that need a capability the driver does not
 * declare (`canBeSource`, `canBeTarget`, `restorePoints`) are skipped.
 *
 * @example
 * ```ts
 * // packages/driver-foo/test/foo-driver.test.ts
 * import { runDriverConformance } from '@replikit/core/testing';
 * import { localTransport } from '@replikit/transport';
 * import { createFooDriver } from '../src/index.js';
 *
 * runDriverConformance({
 *   name: 'foo',
 *   create: async () => createFooDriver({ url: process.env.FOO_URL! }),
 *   fixtures: {
 *     createSourceVM: (hv, spec) => fooCreateVM(hv, spec),
 *     writeGuest: (hv, vmId, diskId, offset, data) => fooGuestWrite(vmId, diskId, offset, data),
 *     writeOutside: (hv, replica, diskId, offset, data) => fooRawWrite(replica.id, diskId, offset, data),
 *   },
 *   transport: localTransport(),
 * });
 * ```
 */
export function runDriverConformance(options: DriverConformanceOptions): void {
  const { fixtures } = options;
  const size = options.diskSize ?? 4 * MiB;
  if (!Number.isSafeInteger(size) || size < 4 * MiB || size % MiB !== 0) {
    throw new RangeError(`runDriverConformance: diskSize must be a multiple of 1 MiB ≥ 4 MiB, got ${size}`);
  }
  let counter = 0;
  const unique = (tag: string): string =>
    `rkc-${tag}-${process.pid.toString(36)}${Date.now().toString(36)}${(counter++).toString(36)}`;

  describe(`driver conformance: ${options.name}`, () => {
    let hv: Hypervisor;

    beforeEach(async () => {
      hv = await options.create();
    });
    afterEach(async () => {
      await hv?.close();
    });
    afterAll(async () => {
      await fixtures.cleanup?.();
    });

    const sourceVM = (tag: string, disks = 1): Promise<VMInfo> =>
      fixtures.createSourceVM(hv, {
        name: unique(tag),
        disks: Array.from({ length: disks }, (_, i) => ({ id: `disk${i}`, size: size - i * MiB })),
      });

    const seedReplica = async (
      tag: string,
      disks = 1,
    ): Promise<{ source: VMInfo; spec: ReplicaSpec; replica: Replica }> => {
      const source = await sourceVM(`${tag}-src`, disks);
      const spec: ReplicaSpec = {
        name: unique(`${tag}-rep`),
        source,
        disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size, ...(d.label ? { label: d.label } : {}) })),
      };
      return { source, spec, replica: await hv.ensureReplica(spec) };
    };

    /** Writes `writes` to a replica disk with a fresh writer, mirroring them into `model`. */
    const writeReplica = async (
      replica: Replica,
      disk: DiskRef,
      model: Uint8Array,
      writes: Array<{ offset: number; data?: Uint8Array; zeroes?: number }>,
      runId?: string,
    ): Promise<void> => {
      const writer = await hv.openWriter(replica, disk, runId === undefined ? {} : { runId });
      try {
        expect(writer.size).toBe(disk.size);
        for (const w of writes) {
          if (w.data) {
            await writer.write(w.offset, w.data);
            model.set(w.data, w.offset);
          } else {
            await writer.writeZeroes(w.offset, w.zeroes!);
            model.fill(0, w.offset, w.offset + w.zeroes!);
          }
        }
        await writer.flush();
      } finally {
        await writer.close();
      }
      await writer.close(); // twice is harmless
    };

    const expectDisk = async (disk: DiskRef, model: Uint8Array): Promise<void> => {
      expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
    };

    const expectCode = async (action: () => Promise<unknown>, code: ErrorCode): Promise<void> => {
      await expect((async () => action())()).rejects.toMatchObject({ code });
    };

    it('declares sane capabilities', () => {
      const caps = hv.capabilities;
      expect(typeof hv.kind).toBe('string');
      expect(hv.kind.length).toBeGreaterThan(0);
      expect(Array.isArray(caps.methods)).toBe(true);
      expect(caps.methods.length).toBeGreaterThan(0);
      for (const m of caps.methods) expect(typeof m).toBe('string');
      for (const flag of ['canBeSource', 'canBeTarget', 'changeTracking', 'restorePoints'] as const) {
        expect(typeof caps[flag]).toBe('boolean');
      }
      expect(caps.canBeSource || caps.canBeTarget).toBe(true);
      expect(caps.formats.length).toBeGreaterThan(0);
      if (caps.changeTracking) expect(hv.changeTracker).toBeDefined();
    });

    it('lists and finds VMs; an unknown VM is E_NOT_FOUND', async () => {
      const vm = await sourceVM('list', 2);
      expect(vm.disks).toHaveLength(2);
      expect(vm.disks.map((d) => d.size)).toEqual([size, size - MiB]);
      const byId = await hv.getVM(vm.id);
      expect(byId.id).toBe(vm.id);
      expect(byId.disks.map((d) => d.id)).toEqual(vm.disks.map((d) => d.id));
      for (const d of byId.disks) expect(d.vmId).toBe(vm.id);
      expect(JSON.parse(JSON.stringify(byId))).toEqual(byId);
      expect((await hv.getVM(vm.name)).id).toBe(vm.id);
      expect((await hv.listVMs()).map((v) => v.id)).toContain(vm.id);
      await expectCode(() => hv.getVM('replikit-conformance-no-such-vm'), 'E_NOT_FOUND');
      await expectCode(() => hv.power('replikit-conformance-no-such-vm', 'start'), 'E_NOT_FOUND');
    });

    it('snapshots every disk at one instant; a snapshot survives JSON and later guest writes', async (ctx) => {
      if (!hv.capabilities.canBeSource) ctx.skip();
      const vm = await sourceVM('snap', 2);
      const offsets = [0, 8191, 2 * MiB - 7];
      const writeAll = async (seed: number): Promise<void> => {
        for (const disk of vm.disks) {
          for (const [i, offset] of offsets.entries()) {
            await fixtures.writeGuest(hv, vm.id, disk.id, offset, testPattern(seed + i, 5000));
          }
        }
      };
      const expectAll = async (snapshotDisks: DiskRef[], seed: number): Promise<void> => {
        for (const disk of snapshotDisks) {
          const reader = await hv.openReader(disk);
          try {
            for (const [i, offset] of offsets.entries()) {
              expect(compareBytes(await reader.read(offset, 5000), testPattern(seed + i, 5000))).toBe('equal');
            }
          } finally {
            await reader.close();
          }
        }
      };
      await writeAll(100);
      const first = await hv.snapshot(vm.id, 'conformance A');
      await writeAll(200);
      const second = await hv.snapshot(vm.id, 'conformance B');
      expect(first.vmId).toBe(vm.id);
      expect(first.label).toBe('conformance A');
      expect(Number.isNaN(Date.parse(first.createdAt))).toBe(false);
      expect(first.disks.map((d) => d.size)).toEqual(vm.disks.map((d) => d.size));
      for (const d of first.disks) expect(d.snapshotId).toBe(first.id);
      await expectAll(first.disks, 100);
      await expectAll(second.disks, 200);
      const revived = JSON.parse(JSON.stringify(first)) as typeof first;
      await expectAll(revived.disks, 100);
      const listed = (await hv.listSnapshots(vm.id)).map((s) => s.id);
      expect(listed.indexOf(first.id)).toBeGreaterThanOrEqual(0);
      expect(listed.indexOf(second.id)).toBeGreaterThan(listed.indexOf(first.id));
      await hv.deleteSnapshot(second);
      expect((await hv.listSnapshots(vm.id)).map((s) => s.id)).not.toContain(second.id);
      await expectAll(first.disks, 100);
      await expectCode(() => hv.snapshot('replikit-conformance-no-such-vm', 'x'), 'E_NOT_FOUND');
    });

    it('reads back exactly what was written, at odd offsets and sizes', async (ctx) => {
      if (!hv.capabilities.canBeSource) ctx.skip();
      const vm = await sourceVM('read');
      const disk = vm.disks[0]!;
      const model = new Uint8Array(size);
      const writes = [
        { offset: 4095, data: testPattern(1, 8193) },
        { offset: MiB - 3, data: testPattern(2, 10) },
        { offset: 2 * MiB + 5, data: testPattern(3, 200_000) },
        { offset: size - 1, data: testPattern(4, 1) },
      ];
      for (const w of writes) {
        await fixtures.writeGuest(hv, vm.id, disk.id, w.offset, w.data);
        model.set(w.data, w.offset);
      }
      const snap = await hv.snapshot(vm.id, 'conformance read');
      const reader = await hv.openReader(snap.disks[0]!);
      try {
        expect(reader.size).toBe(size);
        expect(Number.isSafeInteger(reader.blockSize) && reader.blockSize > 0).toBe(true);
        expect(reader.blockSize & (reader.blockSize - 1)).toBe(0);
        for (const w of writes) expect(compareBytes(await reader.read(w.offset, w.data.length), w.data)).toBe('equal');
        expect((await reader.read(0, 0)).length).toBe(0);
        expect(compareBytes(await reader.read(size - 1, 1), model.subarray(size - 1))).toBe('equal');
        expect(compareBytes(await reader.read(4000, 10_000), model.subarray(4000, 14_000))).toBe('equal');
        expect(compareBytes(await reader.read(0, size), model)).toBe('equal');
        // A reader that names its file spans must name exactly what it reads.
        if (reader.fileSpans) {
          for (const [offset, length] of [
            [4000, 10_000],
            [0, size],
          ] as const) {
            const bytes = new Uint8Array(length);
            let at = 0;
            for (const span of reader.fileSpans(offset, length)) {
              expect(span.length).toBeGreaterThan(0);
              expect(readSync(span.fd, bytes, at, span.length, span.position)).toBe(span.length);
              at += span.length;
            }
            expect(at).toBe(length);
            expect(compareBytes(bytes, model.subarray(offset, offset + length))).toBe('equal');
          }
        }
      } finally {
        await reader.close();
      }
      await reader.close(); // twice is harmless
    });

    it('rejects reads outside the disk and unknown disks', async (ctx) => {
      if (!hv.capabilities.canBeSource) ctx.skip();
      const vm = await sourceVM('badread');
      const snap = await hv.snapshot(vm.id, 'conformance bad reads');
      const reader = await hv.openReader(snap.disks[0]!);
      try {
        await expectCode(() => reader.read(size - 100, 101), 'E_INPUT');
        await expectCode(() => reader.read(size, 1), 'E_INPUT');
        await expectCode(() => reader.read(-1, 1), 'E_INPUT');
        await expectCode(() => reader.read(0, -1), 'E_INPUT');
        await expectCode(() => reader.read(1.5, 2), 'E_INPUT');
      } finally {
        await reader.close();
      }
      await expectCode(() => hv.openReader({ ...snap.disks[0]!, id: 'no-such-disk' }), 'E_NOT_FOUND');
    });

    it('reports sparse allocated() extents that cover every written byte', async (ctx) => {
      if (!hv.capabilities.canBeSource) ctx.skip();
      const vm = await sourceVM('sparse');
      const disk = vm.disks[0]!;
      const writes = [
        { offset: 100, data: testPattern(5, 10) },
        { offset: 3 * MiB + 12_345, data: testPattern(6, 5000) },
      ];
      for (const w of writes) await fixtures.writeGuest(hv, vm.id, disk.id, w.offset, w.data);
      const snap = await hv.snapshot(vm.id, 'conformance sparse');
      const reader = await hv.openReader(snap.disks[0]!);
      const extents: Extent[] = [];
      let content: Uint8Array;
      try {
        for await (const e of reader.allocated()) extents.push({ ...e });
        content = await reader.read(0, size);
      } finally {
        await reader.close();
      }
      let end = 0;
      for (const e of extents) {
        expect(Number.isSafeInteger(e.offset) && Number.isSafeInteger(e.length)).toBe(true);
        expect(e.length).toBeGreaterThan(0);
        expect(e.offset).toBeGreaterThanOrEqual(end); // ascending, not overlapping
        end = e.offset + e.length;
        expect(end).toBeLessThanOrEqual(size);
      }
      const covered = (offset: number): boolean =>
        extents.some((e) => offset >= e.offset && offset < e.offset + e.length);
      for (const w of writes) {
        expect(covered(w.offset)).toBe(true);
        expect(covered(w.offset + w.data.length - 1)).toBe(true);
      }
      let outside = 0;
      for (let i = 0, k = 0; i < size; i++) {
        while (k < extents.length && extents[k]!.offset + extents[k]!.length <= i) k++;
        const inside = k < extents.length && i >= extents[k]!.offset;
        if (!inside && content[i] !== 0) outside++;
      }
      expect(outside).toBe(0); // every byte outside the extents reads as zero
      expect(extents.reduce((n, e) => n + e.length, 0)).toBeLessThan(size);
    });

    it('writes a replica at odd offsets, with zeroes, and reads it back after a restore point', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { replica } = await seedReplica('write', 2);
      expect(replica.created).toBe(true);
      expect(replica.disks.map((d) => d.size)).toEqual([size, size - MiB]);
      const disk = replica.disks[0]!;
      const model = new Uint8Array(size);
      await writeReplica(replica, disk, model, [
        { offset: 4095, data: testPattern(10, 8193) },
        { offset: MiB - 3, data: testPattern(11, 10) },
        { offset: 2 * MiB + 5, data: testPattern(12, 200_000) },
        { offset: size - 1, data: testPattern(13, 1) },
        { offset: 4195, zeroes: 1000 },
        { offset: 2 * MiB, zeroes: 65_536 },
        { offset: 3 * MiB, zeroes: 4096 }, // already zero
      ]);
      await hv.createRestorePoint(replica, 'conformance-1');
      await expectDisk(disk, model);
      await expectDisk(replica.disks[1]!, new Uint8Array(size - MiB));
      await writeReplica(replica, disk, model, [
        { offset: 10, data: testPattern(14, 5000) },
        { offset: size - 65_536, zeroes: 65_536 },
        { offset: 3 * MiB, data: testPattern(15, MiB) },
        { offset: 3 * MiB + 17, data: testPattern(16, 33) }, // overwrites part of the previous write
      ]);
      await hv.createRestorePoint(replica, 'conformance-2');
      await expectDisk(disk, model);
    });

    it('refuses to start a replica marked in-progress', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { replica } = await seedReplica('mark');
      await hv.markReplica(replica, 'in-progress');
      expect(await hv.replicaMark(replica)).toBe('in-progress');
      await expectCode(() => hv.power(replica.id, 'start'), 'E_REPLICA_IN_PROGRESS');
      await hv.markReplica(replica, 'ready');
      expect(await hv.replicaMark(replica)).toBe('ready');
      await hv.power(replica.id, 'start');
      expect((await hv.getVM(replica.id)).powerState).toBe('running');
      await hv.power(replica.id, 'shutdown');
      expect((await hv.getVM(replica.id)).powerState).toBe('stopped');
    });

    it('reverts pending writes and returns to an older restore point', async (ctx) => {
      if (!hv.capabilities.canBeTarget || !hv.capabilities.restorePoints) ctx.skip();
      const { replica } = await seedReplica('revert');
      const disk = replica.disks[0]!;
      const model = new Uint8Array(size);
      await writeReplica(replica, disk, model, [
        { offset: 0, data: testPattern(20, 256 * 1024) },
        { offset: MiB, data: testPattern(21, 100_000) },
      ]);
      const v1 = await hv.createRestorePoint(replica, 'v1');
      expect(v1.replicaId).toBe(replica.id);
      expect(v1.label).toBe('v1');
      const m1 = model.slice();

      // Pending writes are not part of the replica's complete version until the next point.
      await writeReplica(replica, disk, model, [
        { offset: 128 * 1024, data: testPattern(22, 256 * 1024) },
        { offset: MiB, zeroes: 50_000 },
      ]);
      await expectDisk(disk, m1);
      expect(await hv.replicaMark(replica)).toBe('in-progress');
      await hv.revertTo(replica, v1);
      await expectDisk(disk, m1);
      expect(await hv.replicaMark(replica)).toBe('ready');

      model.set(m1);
      await writeReplica(replica, disk, model, [{ offset: 128 * 1024, data: testPattern(23, 256 * 1024) }]);
      const v2 = await hv.createRestorePoint(replica, 'v2');
      await writeReplica(replica, disk, model, [
        { offset: 2 * MiB, data: testPattern(24, 70_000) },
        { offset: 0, zeroes: 4096 },
      ]);
      const v3 = await hv.createRestorePoint(replica, 'v3');
      await expectDisk(disk, model);
      const listed = await hv.listRestorePoints(replica);
      expect(listed.map((p) => p.id)).toEqual([v1.id, v2.id, v3.id]);
      expect(listed.map((p) => p.label)).toEqual(['v1', 'v2', 'v3']);
      expect(JSON.parse(JSON.stringify(listed[0]))).toEqual(v1);

      await writeReplica(replica, disk, model, [{ offset: 3 * MiB, data: testPattern(25, 1000) }]); // pending
      await hv.revertTo(replica, JSON.parse(JSON.stringify(v1)));
      await expectDisk(disk, m1);
      expect((await hv.listRestorePoints(replica)).map((p) => p.id)).toEqual([v1.id]);
      await expectCode(() => hv.revertTo(replica, v2), 'E_NOT_FOUND');

      // The replica keeps working after a revert.
      model.set(m1);
      await writeReplica(replica, disk, model, [{ offset: 5, data: testPattern(26, 3000) }]);
      await hv.createRestorePoint(replica, 'v4');
      await expectDisk(disk, model);
    });

    it('is idempotent per restore point label and honours retention', async (ctx) => {
      if (!hv.capabilities.canBeTarget || !hv.capabilities.restorePoints) ctx.skip();
      const { replica } = await seedReplica('idem');
      const disk = replica.disks[0]!;
      const model = new Uint8Array(size);
      await writeReplica(replica, disk, model, [{ offset: 0, data: testPattern(30, 1000) }]);
      const first = await hv.createRestorePoint(replica, 'same');
      const again = await hv.createRestorePoint(replica, 'same');
      expect(again).toEqual(first);
      expect(await hv.listRestorePoints(replica)).toHaveLength(1);
      for (const [i, label] of ['r2', 'r3', 'r4'].entries()) {
        await writeReplica(replica, disk, model, [{ offset: (i + 1) * 4096, data: testPattern(31 + i, 1000) }]);
        await hv.createRestorePoint(replica, label, { retention: 2 });
      }
      expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['r3', 'r4']);
      await expectDisk(disk, model);
    });

    it('keeps the fingerprint until a boot or an outside write changes it', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { replica } = await seedReplica('fingerprint');
      const disk = replica.disks[0]!;
      await writeReplica(replica, disk, new Uint8Array(size), [{ offset: 8192, data: testPattern(40, 5000) }]);
      await hv.createRestorePoint(replica, 'fp');
      await hv.markReplica(replica, 'ready');
      const a = await hv.replicaState(replica);
      expect(typeof a.value).toBe('string');
      expect((await hv.replicaState(replica)).value).toBe(a.value);
      await hv.power(replica.id, 'start');
      const booted = await hv.replicaState(replica);
      expect(booted.value).not.toBe(a.value);
      await hv.power(replica.id, 'shutdown');
      const b = await hv.replicaState(replica);
      expect((await hv.replicaState(replica)).value).toBe(b.value);
      await fixtures.writeOutside(hv, replica, disk.id, 4096, testPattern(41, 512));
      expect((await hv.replicaState(replica)).value).not.toBe(b.value);
    });

    it('finds an existing replica again (created: false) and refuses a different shape', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { spec, replica } = await seedReplica('ensure', 2);
      expect(replica.created).toBe(true);
      expect(replica.disks).toHaveLength(2);
      const again = await hv.ensureReplica(JSON.parse(JSON.stringify(spec)));
      expect(again.created).toBe(false);
      expect(again.id).toBe(replica.id);
      expect(again.disks.map((d) => [d.id, d.size])).toEqual(replica.disks.map((d) => [d.id, d.size]));
      const bigger = { ...spec, disks: spec.disks.map((d) => ({ ...d, size: d.size + MiB })) };
      await expectCode(() => hv.ensureReplica(bigger), 'E_CONFLICT');
    });

    it('rejects bad writes and unknown disks or points', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { replica } = await seedReplica('badwrite');
      const disk = replica.disks[0]!;
      const writer = await hv.openWriter(replica, disk);
      try {
        await expectCode(() => writer.write(size - 10, new Uint8Array(11)), 'E_INPUT');
        await expectCode(() => writer.write(-1, new Uint8Array(1)), 'E_INPUT');
        await expectCode(() => writer.writeZeroes(size, 1), 'E_INPUT');
        await expectCode(() => writer.writeZeroes(0, size + 1), 'E_INPUT');
        await writer.write(size - 10, new Uint8Array(10).fill(7)); // still usable
      } finally {
        await writer.close();
      }
      await expectCode(() => hv.openWriter(replica, { ...disk, id: 'no-such-disk' }), 'E_NOT_FOUND');
      await expectCode(() => hv.openReader({ ...disk, id: 'no-such-disk' }), 'E_NOT_FOUND');
      if (hv.capabilities.restorePoints) {
        const ghost = {
          id: 'rp-no-such-point',
          replicaId: replica.id,
          label: 'ghost',
          createdAt: new Date().toISOString(),
        };
        await expectCode(() => hv.revertTo(replica, ghost), 'E_NOT_FOUND');
      }
    });

    it('allows one writer per disk at a time', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { replica } = await seedReplica('onewriter');
      const disk = replica.disks[0]!;
      const first = await hv.openWriter(replica, disk);
      try {
        await expectCode(() => hv.openWriter(replica, disk), 'E_CONFLICT');
      } finally {
        await first.close();
      }
      const second = await hv.openWriter(replica, disk);
      await second.close();
    });

    it('gives a replica to one run at a time, and again to the same run id', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { replica } = await seedReplica('owner');
      const owner = (runId: string, pid = 4242) => ({
        runId,
        host: 'conformance-host',
        pid,
        stateDir: '/state',
        startedAt: new Date().toISOString(),
      });
      expect(await hv.replicaOwner(replica)).toBeUndefined();
      // Two claims at once: exactly one run gets the replica, the other is told which one.
      const claims = await Promise.all([
        hv.claimReplica(replica, owner('run-a')),
        hv.claimReplica(replica, owner('run-b')),
      ]);
      const winner = claims[0]!.runId;
      expect(['run-a', 'run-b']).toContain(winner);
      expect(claims[1]!.runId).toBe(winner);
      const loser = winner === 'run-a' ? 'run-b' : 'run-a';
      expect(await hv.claimReplica(replica, owner(loser))).toMatchObject({ runId: winner, pid: 4242 });
      const again = await hv.claimReplica(JSON.parse(JSON.stringify(replica)), owner(winner, 4343));
      expect(again).toMatchObject({ runId: winner, pid: 4343, host: 'conformance-host', stateDir: '/state' });
      expect(await hv.replicaOwner(replica)).toEqual(again);
      await expectCode(() => hv.openWriter(replica, replica.disks[0]!, { runId: loser }), 'E_CONFLICT');
      await expectCode(() => hv.openWriter(replica, replica.disks[0]!), 'E_CONFLICT');
      await hv.releaseReplica(replica, loser);
      expect((await hv.replicaOwner(replica))?.runId).toBe(winner);
      const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: winner });
      await writer.close();
      await hv.releaseReplica(replica, winner);
      expect(await hv.replicaOwner(replica)).toBeUndefined();
      expect((await hv.claimReplica(replica, owner(loser))).runId).toBe(loser);
      await hv.releaseReplica(replica, loser);
    });

    it('never continues or commits writes another run left pending, and they change the fingerprint', async (ctx) => {
      if (!hv.capabilities.canBeTarget || !hv.capabilities.restorePoints) ctx.skip();
      const { replica } = await seedReplica('foreign');
      const disk = replica.disks[0]!;
      const model = new Uint8Array(size);
      await writeReplica(replica, disk, model, [{ offset: 0, data: testPattern(50, 300_000) }], 'run-1');
      await hv.createRestorePoint(replica, 'run-1');
      await hv.markReplica(replica, 'ready');
      const committed = (await hv.replicaState(replica)).value;
      // A peer writes without holding the replica and leaves its writes pending.
      await writeReplica(
        replica,
        disk,
        new Uint8Array(size),
        [{ offset: 4096, data: testPattern(51, 70_000) }],
        'peer',
      );
      expect((await hv.replicaState(replica)).value).not.toBe(committed);
      // The next run takes the replica: the peer's writes are gone, its own go on across writers.
      const owner = { runId: 'run-2', host: 'conformance-host', pid: 4242, startedAt: new Date().toISOString() };
      expect((await hv.claimReplica(replica, owner)).runId).toBe('run-2');
      await writeReplica(replica, disk, model, [{ offset: MiB, data: testPattern(52, 5000) }], 'run-2');
      await writeReplica(replica, disk, model, [{ offset: 2 * MiB, data: testPattern(53, 5000) }], 'run-2');
      await hv.createRestorePoint(replica, 'run-2');
      await hv.releaseReplica(replica, 'run-2');
      await expectDisk(disk, model);
      // A writer of another run does not continue them either, held or not.
      await writeReplica(replica, disk, new Uint8Array(size), [{ offset: 0, zeroes: 65_536 }], 'peer');
      await writeReplica(replica, disk, model, [{ offset: 3 * MiB, data: testPattern(54, 5000) }], 'run-3');
      await hv.createRestorePoint(replica, 'run-3');
      await expectDisk(disk, model);
    });

    it('tracks every changed byte between any two snapshots, also after deleteSnapshot({ keepMetadata })', async () => {
      await checkChangeTrackerModel({ hv, fixtures, name: unique('model'), size });
    });

    it('rejects every long method with E_ABORTED on an aborted signal, and does nothing', async () => {
      await checkAbortHonoured({ hv, fixtures, name: unique('abort'), size });
    });

    it('closes the readers and writers it handed out on close()', async () => {
      await checkCloseReleases({ hv, fixtures, name: unique('close'), size });
    });

    it('accepts concurrent writes to disjoint ranges of one disk', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      await checkConcurrentWrites({ hv, fixtures, name: unique('concurrent'), size });
    });

    it('has capabilities that agree with what it does', async () => {
      await checkCapabilitiesAgree({ hv, fixtures, name: unique('caps'), size });
    });

    for (const tracked of [true, false]) {
      it(`replicates end to end through the engine: full run, then ${tracked ? 'tracked' : 'hash-diff'}`, async (ctx) => {
        if (!hv.capabilities.canBeSource || !hv.capabilities.canBeTarget) ctx.skip();
        if (tracked && !hv.capabilities.changeTracking) ctx.skip();
        const requireTracked = options.trackedVMs === true;
        const modes = await checkEngineEndToEnd(
          { hv, fixtures, name: unique('e2e'), size },
          {
            tracked,
            requireTracked,
            transport: options.transport,
            ...(options.sizeGranule !== undefined ? { sizeGranule: options.sizeGranule } : {}),
          },
        );
        expect(modes?.[0]).toBe('full');
        if (!tracked || requireTracked) expect(modes?.[1]).toBe(tracked ? 'tracked' : 'hash-diff');
      });
    }

    defineFailoverCases({ hv: () => hv, fixtures, size, seedReplica: (tag) => seedReplica(tag), unique });
    defineReverseCases({ hv: () => hv, fixtures, size, seedReplica: (tag) => seedReplica(tag), unique });

    it('deletes a replica', async (ctx) => {
      if (!hv.capabilities.canBeTarget) ctx.skip();
      const { replica } = await seedReplica('delete');
      await hv.deleteReplica(replica);
      await expectCode(() => hv.getVM(replica.id), 'E_NOT_FOUND');
    });
  });
}
