import { randomFillSync } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileVM, readVmJson, writeGuestDisk } from '@replikit/driver-file';

/** A small, seeded pseudo-random generator (mulberry32): the demo's layout is the same every time. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What {@link fillDemoDisk} wrote, in bytes. */
export interface DemoLayout {
  zero: number;
  compressible: number;
  random: number;
}

const STRIPE = 4 * 1024 * 1024;

function compressibleStripe(stripe: number): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < STRIPE; i++) {
    const line = `2026-11-25T02:${String(i % 60).padStart(2, '0')}:00Z host=demo-vm unit=app[${1000 + (i % 17)}] stripe=${stripe} request=${i} status=200 bytes=${(i * 7919) % 65536}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, STRIPE);
}

/**
 * Fills a disk image (already created at its full size, sparse) the way a used system disk looks:
 * stripes of 4 MiB that are zero (left as holes, about 40 %), text-like and compressible (30 %) or
 * random (30 %).
 */
export async function fillDemoDisk(path: string, size: number, seed: number): Promise<DemoLayout> {
  const random = seededRandom(seed);
  const layout: DemoLayout = { zero: 0, compressible: 0, random: 0 };
  const handle = await open(path, 'r+');
  try {
    const noise = Buffer.allocUnsafe(STRIPE);
    for (let offset = 0, stripe = 0; offset < size; offset += STRIPE, stripe++) {
      const length = Math.min(STRIPE, size - offset);
      const pick = random();
      if (pick < 0.4) {
        layout.zero += length;
        continue;
      }
      const data = pick < 0.7 ? compressibleStripe(stripe) : randomFillSync(noise);
      if (pick < 0.7) layout.compressible += length;
      else layout.random += length;
      await handle.write(data, 0, length, offset);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  return layout;
}

/**
 * Changes `fraction` of a disk's blocks as a running guest does: one 4 KiB write at a random
 * place inside each chosen block, through the file driver's guest write (which never lands in
 * the middle of a snapshot). Returns the number of blocks changed.
 */
export async function writeLikeAGuest(
  vm: { root: string; name: string; diskId: string; size: number },
  blockSize: number,
  fraction: number,
  seed: number,
): Promise<number> {
  const random = seededRandom(seed);
  const blocks = Math.ceil(vm.size / blockSize);
  const wanted = Math.max(1, Math.round(blocks * fraction));
  const chosen = new Set<number>();
  while (chosen.size < wanted) chosen.add(Math.floor(random() * blocks));
  const page = Buffer.allocUnsafe(4096);
  for (const block of [...chosen].sort((a, b) => a - b)) {
    const pagesInBlock = Math.max(1, Math.floor(Math.min(blockSize, vm.size - block * blockSize) / 4096));
    const offset = block * blockSize + Math.floor(random() * pagesInBlock) * 4096;
    await writeGuestDisk(
      vm.root,
      vm.name,
      vm.diskId,
      offset,
      randomFillSync(page).subarray(0, Math.min(4096, vm.size - offset)),
    );
  }
  return chosen.size;
}

/** A disk of the demo VM: its image and what {@link fillDemoDisk} put in it. */
export interface DemoImage {
  id: string;
  size: number;
  path: string;
  layout: DemoLayout;
}

/**
 * Creates the demo VM `demo-vm` under `root` with a 'system' and a 'data' disk of the given sizes,
 * filled with the demo's mix of zero, compressible and random data.
 */
export async function createDemoVm(root: string, sizeA: number, sizeB: number): Promise<DemoImage[]> {
  await createFileVM(root, {
    name: 'demo-vm',
    cpus: 2,
    memoryMiB: 2048,
    changeTracking: true,
    disks: [
      { id: 'system', size: sizeA, label: 'system' },
      { id: 'data', size: sizeB, label: 'data' },
    ],
  });
  const vm = await readVmJson(join(root, 'demo-vm'));
  const images: DemoImage[] = [];
  for (const [i, disk] of vm.disks.entries()) {
    const path = join(root, 'demo-vm', disk.file);
    images.push({ id: disk.id, size: disk.size, path, layout: await fillDemoDisk(path, disk.size, 1000 + i) });
  }
  return images;
}
