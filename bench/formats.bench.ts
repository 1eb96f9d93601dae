// Convert throughput of @replikit/formats against `qemu-img convert`, per issue 3: a raw image
// (256 MiB by default, 75 % allocated with random data, the rest zero) is converted raw → VHDX,
// VHDX → raw, raw → VHD and VHD → raw by both tools on the same warm files. Each pair runs
// five times in alternating order (replikit first, then qemu-img first, …); the best time of
// each tool is reported with the ratio replikit/qemu-img in throughput (> 1 means replikit is
// faster). Two modes, each tool in the same one: 'synced' (replikit's default fsync, qemu-img
// -t writeback, which flushes on close) and 'page cache' (replikit sync: false, qemu-img's
// default cache mode 'unsafe', which never flushes).
// Flags: --size=256MiB --block-size=32MiB (VHDX; VHD uses 2 MiB) --runs=5
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatBytes, parseSize } from '@replikit/core';
import { convertDisk } from '@replikit/formats';

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

async function makeSource(path: string, size: number): Promise<void> {
  const handle = await open(path, 'w');
  const stripe = 4 * 1024 * 1024;
  const noise = Buffer.allocUnsafe(stripe);
  try {
    await handle.truncate(size);
    for (let offset = 0, i = 0; offset < size; offset += stripe, i++) {
      if (i % 4 === 3) continue; // every fourth 4 MiB stripe stays a hole
      await handle.write(randomFillSync(noise), 0, Math.min(stripe, size - offset), offset);
    }
  } finally {
    await handle.close();
  }
}

async function timed(fn: () => Promise<void> | void): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export async function run(flags: string[]): Promise<void> {
  if (spawnSync('qemu-img', ['--version']).status !== 0) {
    throw new Error('qemu-img is missing: run `node scripts/setup.mjs` (Debian qemu-utils) and retry');
  }
  const size = parseSize(flag(flags, 'size', '256MiB'), '--size');
  const vhdxBlock = parseSize(flag(flags, 'block-size', '32MiB'), '--block-size');
  const runs = Number(flag(flags, 'runs', '5'));
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-formats-'));
  try {
    const raw = join(dir, 'source.raw');
    await makeSource(raw, size);
    // inputs of the reverse conversions, made once by qemu-img so both tools read the same file
    const vhdx = join(dir, 'source.vhdx');
    const vhd = join(dir, 'source.vhd');
    execFileSync('qemu-img', [
      'convert',
      '-f',
      'raw',
      '-O',
      'vhdx',
      '-o',
      `subformat=dynamic,block_size=${vhdxBlock}`,
      raw,
      vhdx,
    ]);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, vhd]);
    for (const f of [raw, vhdx, vhd]) await readFile(f); // warm the page cache
    const cases = [
      {
        name: 'raw → vhdx',
        input: raw,
        ours: (out: string, sync: boolean) => convertDisk(raw, out, { to: 'vhdx', blockSize: vhdxBlock, sync }),
        qemu: ['-f', 'raw', '-O', 'vhdx', '-o', `subformat=dynamic,block_size=${vhdxBlock}`],
      },
      {
        name: 'vhdx → raw',
        input: vhdx,
        ours: (out: string, sync: boolean) => convertDisk(vhdx, out, { to: 'raw', sync }),
        qemu: ['-f', 'vhdx', '-O', 'raw'],
      },
      {
        name: 'raw → vhd',
        input: raw,
        ours: (out: string, sync: boolean) => convertDisk(raw, out, { to: 'vhd', sync }),
        qemu: ['-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on'],
      },
      {
        name: 'vhd → raw',
        input: vhd,
        ours: (out: string, sync: boolean) => convertDisk(vhd, out, { to: 'raw', sync }),
        qemu: ['-f', 'vpc', '-O', 'raw'],
      },
    ];
    console.log(
      `source: ${formatBytes(size)} raw, 75 % random data, 25 % holes; VHDX blocks ${formatBytes(vhdxBlock)}; best of ${runs}`,
    );
    console.log(
      'conversion     mode         replikit             qemu-img             ratio (replikit/qemu-img throughput)',
    );
    for (const c of cases) {
      for (const sync of [true, false]) {
        const out = join(dir, 'out');
        const qemuArgs = ['convert', ...(sync ? ['-t', 'writeback'] : []), ...c.qemu, c.input, out];
        let ours = Number.POSITIVE_INFINITY;
        let theirs = Number.POSITIVE_INFINITY;
        for (let i = 0; i < runs; i++) {
          const order = i % 2 === 0 ? ['ours', 'qemu'] : ['qemu', 'ours'];
          for (const who of order) {
            await rm(out, { force: true });
            if (!sync) execFileSync('sync'); // start each unsynced run from a clean page cache state
            if (who === 'ours') ours = Math.min(ours, await timed(() => c.ours(out, sync)));
            else theirs = Math.min(theirs, await timed(() => void execFileSync('qemu-img', qemuArgs)));
          }
        }
        await rm(out, { force: true });
        const rate = (t: number) => `${(size / t / 2 ** 20).toFixed(0).padStart(5)} MiB/s`;
        console.log(
          `${c.name.padEnd(14)} ${(sync ? 'synced' : 'page cache').padEnd(12)} ${ours.toFixed(3)} s ${rate(ours)}  ${theirs.toFixed(3)} s ${rate(theirs)}  ${(theirs / ours).toFixed(2)}`,
        );
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
