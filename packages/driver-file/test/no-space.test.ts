import { spawnSync } from 'node:child_process';
import { mkdtemp, open, readdir, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Hypervisor, Replica, RestorePoint, VMInfo } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createFileDriver, fileVmPaths } from '../src/index.js';

const MiB = 1024 * 1024;
const SOURCE: VMInfo = { id: 'source', name: 'source', cpus: 1, memoryMiB: 64, powerState: 'stopped', disks: [] };

// A 16 MiB tmpfs makes "the disk is full" real. Mounting needs root; without it the tests are skipped.
const mountPoint = await mkdtemp(join(tmpdir(), 'rk-nospace-'));
const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mountPoint], { encoding: 'utf8' });
const skipReason =
  mounted.status === 0
    ? undefined
    : `cannot mount a 16 MiB tmpfs (${(mounted.stderr || mounted.error?.message || 'mount failed').trim()}); run the tests as root to cover full disks`;

afterAll(async () => {
  if (!skipReason) spawnSync('umount', [mountPoint]);
  await rm(mountPoint, { recursive: true, force: true });
});

describe.skipIf(skipReason !== undefined)(
  `file driver on a full file system${skipReason ? ` (skipped: ${skipReason})` : ''}`,
  () => {
    let hv: Hypervisor;

    afterEach(async () => {
      for (const entry of await readdir(mountPoint))
        await rm(join(mountPoint, entry), { recursive: true, force: true });
    });

    /** A replica of one 8 MiB disk whose restore point v1 holds 1 MiB of data at offset 0. */
    async function replicaAtV1(): Promise<{ replica: Replica; v1: RestorePoint; model: Uint8Array }> {
      hv = createFileDriver({ root: mountPoint });
      const replica = await hv.ensureReplica({
        name: 'rep',
        source: SOURCE,
        disks: [{ sourceDiskId: 'd0', size: 8 * MiB }],
      });
      const model = new Uint8Array(8 * MiB);
      const w = await hv.openWriter(replica, replica.disks[0]!);
      await w.write(0, testPattern(1, MiB));
      model.set(testPattern(1, MiB), 0);
      await w.close();
      return { replica, v1: await hv.createRestorePoint(replica, 'v1'), model };
    }

    async function fill(leave: number): Promise<void> {
      const { bavail, bsize } = await statfs(mountPoint);
      const fh = await open(join(mountPoint, 'filler'), 'w');
      const chunk = Buffer.alloc(MiB, 0xaa);
      let left = bavail * bsize - leave;
      for (let at = 0; left > 0; at += MiB, left -= MiB) await fh.write(chunk, 0, Math.min(MiB, left), at);
      await fh.close();
    }

    it('rejects the write that fills the disk with E_NO_SPACE; a revert returns to the last point', async () => {
      const { replica, v1, model } = await replicaAtV1();
      const disk = replica.disks[0]!;
      const w = await hv.openWriter(replica, disk);
      let error: unknown;
      for (let i = 0; i < 40 && !error; i++) {
        error = await w.write((i % 8) * MiB, testPattern(10 + i, MiB)).catch((e: unknown) => e);
      }
      expect(error).toMatchObject({ code: 'E_NO_SPACE' });
      expect((error as Error).message).toContain('d0.raw.overlay');
      await expect(w.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'E_NO_SPACE' }); // the writer stays failed
      await expect(w.flush()).rejects.toMatchObject({ code: 'E_NO_SPACE' });
      await w.close();
      expect(await hv.replicaMark(replica)).toBe('in-progress');
      await hv.revertTo(replica, v1);
      expect(await hv.replicaMark(replica)).toBe('ready');
      expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
      // The space is back: the next run works.
      const again = await hv.openWriter(replica, disk);
      await again.write(2 * MiB, testPattern(50, MiB));
      model.set(testPattern(50, MiB), 2 * MiB);
      await again.close();
      await hv.createRestorePoint(replica, 'v2');
      expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
    });

    /** Version 2 writes 6 MiB into holes of the image; the disk is then filled up to 2 MiB short. */
    async function commitThatRunsOutOfSpace() {
      const setup = await replicaAtV1();
      const disk = setup.replica.disks[0]!;
      const v2 = setup.model.slice();
      const w = await hv.openWriter(setup.replica, disk);
      for (let offset = 2 * MiB; offset < 8 * MiB; offset += MiB) {
        await w.write(offset, testPattern(offset, MiB));
        v2.set(testPattern(offset, MiB), offset);
      }
      await w.close();
      await fill(2 * MiB);
      const error = await hv.createRestorePoint(setup.replica, 'v2').catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'E_NO_SPACE' });
      expect(await readdir(fileVmPaths(mountPoint, 'rep').dir)).toContain('commit.json'); // applying had begun
      expect(await hv.replicaMark(setup.replica)).toBe('in-progress');
      expect((await hv.listRestorePoints(setup.replica)).map((p) => p.label)).toEqual(['v1']);
      await expect(hv.power(setup.replica.id, 'start')).rejects.toMatchObject({ code: 'E_REPLICA_IN_PROGRESS' });
      return { ...setup, disk, v2 };
    }

    it('rolls a commit that ran out of space back to the last point on revert', async () => {
      const { replica, v1, model, disk } = await commitThatRunsOutOfSpace();
      await hv.revertTo(replica, v1); // needs no new space: the undo only rewrites blocks already allocated
      expect(await hv.replicaMark(replica)).toBe('ready');
      expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['v1']);
      expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
      expect((await readdir(fileVmPaths(mountPoint, 'rep').dir)).filter((f) => f.endsWith('.json'))).toEqual([
        'restore-points.json',
        'vm.json',
      ]);
    });

    it('finishes a commit that ran out of space once space is freed', async () => {
      const { replica, disk, v2 } = await commitThatRunsOutOfSpace();
      await rm(join(mountPoint, 'filler'));
      expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['v1', 'v2']);
      expect(await hv.replicaMark(replica)).toBe('ready');
      expect(compareBytes(await readWholeDisk(hv, disk), v2)).toBe('equal');
    });
  },
);
