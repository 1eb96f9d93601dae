import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskRef, Extent, Hypervisor, Snapshot } from '@replikit/core';
import { compareBytes, readWholeDisk } from '@replikit/core/testing';
import { expect } from 'vitest';
import { ALLOCATION_GRANULE, fileVmPaths } from '../../src/index.js';

const G = ALLOCATION_GRANULE;

/** A snapshot the model keeps, with what the VM's disks held when it was taken. */
export interface KeptSnapshot {
  snap: Snapshot;
  content: Uint8Array[];
}

/** The extents of an iterable, or undefined. */
export async function collect(extents: AsyncIterable<Extent> | undefined): Promise<Extent[] | undefined> {
  if (!extents) return undefined;
  const out: Extent[] = [];
  for await (const e of extents) out.push(e);
  return out;
}

/** Granule indexes where `a` and `b` differ. */
export function differingGranules(a: Uint8Array, b: Uint8Array): number[] {
  const out: number[] = [];
  for (let at = 0; at < a.length; at += G) {
    const end = Math.min(at + G, a.length);
    if (compareBytes(a.subarray(at, end), b.subarray(at, end)) !== 'equal') out.push(at / G);
  }
  return out;
}

export function covers(extents: Extent[], granule: number): boolean {
  const at = granule * G;
  return extents.some((e) => e.offset <= at && at < e.offset + e.length);
}

export function checkExtents(extents: Extent[], size: number): void {
  let last = 0;
  for (const e of extents) {
    expect(e.length).toBeGreaterThan(0);
    expect(e.offset).toBeGreaterThanOrEqual(last);
    expect(e.offset + e.length).toBeLessThanOrEqual(size);
    last = e.offset + e.length;
  }
}

/** Reads a disk with `readInto` in chunks of odd sizes (as the engine reads into pooled buffers), and its allocated extents. */
export async function readBack(hv: Hypervisor, disk: DiskRef): Promise<{ data: Uint8Array; allocated: Extent[] }> {
  const reader = await hv.openReader(disk);
  try {
    const allocated: Extent[] = [];
    for await (const e of reader.allocated()) allocated.push(e);
    const data = new Uint8Array(reader.size);
    const chunk = new Uint8Array(300 * 1024 + 7);
    for (let at = 0; at < reader.size; at += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, reader.size - at));
      part.fill(0xee);
      await reader.readInto!(at, part);
      data.set(part, at);
    }
    return { data, allocated };
  } finally {
    await reader.close();
  }
}

function isZero(data: Uint8Array): boolean {
  return data.every((b) => b === 0);
}

/** `full` or `diff:<base>` for each disk of a snapshot, from its snapshot.json. */
export async function snapshotKinds(root: string, vm: string, snap: Snapshot): Promise<string[]> {
  const meta = JSON.parse(await readFile(join(fileVmPaths(root, vm).snapshots, snap.id, 'snapshot.json'), 'utf8'));
  return meta.disks.map((d: { kind?: string; base?: string }) => (d.kind === 'diff' ? `diff:${d.base}` : 'full'));
}

/** Writes into a VM's image with plain fs calls, behind the driver's back. */
export async function writeOutside(
  root: string,
  vm: string,
  file: string,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  const fh = await open(join(fileVmPaths(root, vm).dir, file), 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** Every kept snapshot reads back what the VM held; changes() between any two covers what differs. */
export async function checkAll(hv: Hypervisor, kept: KeptSnapshot[]): Promise<void> {
  for (const k of kept) {
    for (const [i, disk] of k.snap.disks.entries()) {
      const what = `${k.snap.id} disk ${i}`;
      expect(compareBytes(await readWholeDisk(hv, disk), k.content[i]!), what).toBe('equal');
      const back = await readBack(hv, disk);
      expect(compareBytes(back.data, k.content[i]!), `${what} (readInto)`).toBe('equal');
      // Every byte outside allocated() reads as zero.
      checkExtents(back.allocated, disk.size);
      let at = 0;
      for (const e of [...back.allocated, { offset: disk.size, length: 0 }]) {
        expect(isZero(k.content[i]!.subarray(at, e.offset)), `${what}: data outside allocated() at ${at}`).toBe(true);
        at = e.offset + e.length;
      }
    }
  }
  for (const [bi, base] of kept.entries()) {
    for (const current of kept.slice(bi)) {
      for (const [i, disk] of current.snap.disks.entries()) {
        const extents = await collect(await hv.changeTracker!.changes(disk, base.snap, current.snap));
        if (!extents) continue;
        checkExtents(extents, disk.size);
        for (const g of differingGranules(base.content[i]!, current.content[i]!)) {
          expect(covers(extents, g), `granule ${g} of disk ${i} between ${base.snap.id} and ${current.snap.id}`).toBe(
            true,
          );
        }
      }
    }
  }
}
