// The Hyper-V driver's RCT incremental against the same incremental with hash-diff (issue 20), on
// the SIMULATED Hyper-V host of @replikit/hyperv-sim (a fake pwsh and VHDX files on disk; not
// Hyper-V). A VM with one dynamic VHDX disk, a quarter of it written, is replicated hyperv ► file
// twice: one job plans from RCT (recovery checkpoints, GetVirtualDiskChanges), one has `rct: false`
// (standard checkpoints, so the engine compares digests of the whole disk). Then the guest writes
// 4 KiB into 1 % of the 64 KiB blocks and each job runs again. Reported for each incremental: wall
// time, the bytes read from the source's VHDX files (counted by the simulated host, not by the
// driver), this process's CPU seconds (the engine and driver; the fake pwsh is another process),
// and the ratios. The peer for a full read is `qemu-img convert` of the same VHDX (before any
// checkpoint: qemu-img cannot open a differencing VHDX chain) against replikit's full run.
// Flags: --hyperv-size=1GiB --hyperv-allocated=25
import { execFile } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  DriverRegistry,
  defineDriver,
  FileStateStore,
  formatBytes,
  parseSize,
  ReplicationEngine,
} from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';
import { createHyperVDriver, HYPERV_KIND_CAPABILITIES, hypervDriverOptionsSchema } from '@replikit/driver-hyperv';
import { adminCmdlet, createSimulatedHost } from '@replikit/hyperv-sim';
import { localTransport } from '@replikit/transport';

const exec = promisify(execFile);
const MiB = 2 ** 20;
const BLOCK = 64 * 1024;
const STRIPE = 4 * MiB;

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

interface Measured {
  seconds: number;
  read: number;
  cpu: number;
  modes: string;
}

/** Runs the benchmark (see the header). */
export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'hyperv-size', '1GiB'), '--hyperv-size');
  const allocated = Number(flag(flags, 'hyperv-allocated', '25')) / 100;
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-hyperv-'));
  try {
    const host = await createSimulatedHost(join(dir, 'host'));
    const vm = 'bench-rct';
    const disk = join(host.root, 'vms', 'bench-rct.vhdx');
    await adminCmdlet(host.root, 'New-VM', { Name: vm, Generation: 2, NoVHD: true });
    await adminCmdlet(host.root, 'New-VHD', { Path: disk, SizeBytes: size, Dynamic: true });
    await adminCmdlet(host.root, 'Add-VMHardDiskDrive', { VMName: vm, Path: disk });
    // A quarter of the disk written, in 4 MiB stripes spread over it, 64 MiB per rewrite.
    let batch: { offset: number; data: Uint8Array }[] = [];
    for (let at = 0, i = 0; at < size; at += STRIPE, i++) {
      if (((i * 37) % 100) / 100 < allocated) {
        batch.push({ offset: at, data: randomFillSync(new Uint8Array(Math.min(STRIPE, size - at))) });
      }
      if (batch.length === 16 || (at + STRIPE >= size && batch.length > 0)) {
        await host.guestWrites(vm, 0, batch);
        batch = [];
      }
    }

    // The peer for a full read: qemu-img convert of the same VHDX, before any checkpoint exists.
    let qemu: number | undefined;
    try {
      const start = process.hrtime.bigint();
      await exec('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', disk, join(dir, 'qemu.raw')]);
      qemu = Number(process.hrtime.bigint() - start) / 1e9;
      await rm(join(dir, 'qemu.raw'), { force: true });
    } catch {
      qemu = undefined;
    }

    const hyperv = defineDriver({
      kind: 'hyperv',
      capabilities: HYPERV_KIND_CAPABILITIES,
      options: hypervDriverOptionsSchema,
      create: (options) => createHyperVDriver(options, { openImage: (path) => host.openDisk(path) }),
    });
    const engine = (name: string) =>
      new ReplicationEngine({
        transport: localTransport(),
        stateStore: new FileStateStore(join(dir, `state-${name}`)),
        drivers: new DriverRegistry().register(hyperv).register(fileDriver),
      });
    const engines = { rct: engine('rct'), 'hash-diff': engine('hash') };
    const bytesRead = () => [...host.bytesRead().values()].reduce((sum, n) => sum + n, 0);
    const runOf = async (which: 'rct' | 'hash-diff'): Promise<Measured> => {
      const root = join(dir, `replicas-${which}`);
      await mkdir(root, { recursive: true });
      const read0 = bytesRead();
      const cpu0 = process.cpuUsage();
      const start = process.hrtime.bigint();
      const record = await engines[which].run({
        name: `bench-${which}`,
        method: 'qhybrid',
        blockSize: BLOCK,
        source: { driver: 'hyperv', pwsh: host.pwsh, vm, rct: which === 'rct', callTimeoutMs: 600_000 },
        target: { driver: 'file', root },
        options: { retention: 1 },
      });
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const cpu = process.cpuUsage(cpu0);
      if (record.outcome !== 'completed') {
        throw new Error(`the ${which} run ended ${record.outcome}: ${record.error?.message ?? ''}`);
      }
      return {
        seconds,
        read: bytesRead() - read0,
        cpu: (cpu.user + cpu.system) / 1e6,
        modes: record.disks.map((d) => d.mode).join(','),
      };
    };
    try {
      const full = await runOf('rct');
      await runOf('hash-diff');
      const blocks = Math.floor(size / BLOCK);
      const page = new Uint8Array(4096);
      const writes: { offset: number; data: Uint8Array }[] = [];
      for (let block = 0; block < blocks; block++) {
        if ((block * 2654435761) % 100 !== 0) continue;
        writes.push({ offset: block * BLOCK + ((block * 7) % 16) * 4096, data: randomFillSync(page).slice() });
      }
      await host.guestWrites(vm, 0, writes);
      const tracked = await runOf('rct');
      const hashed = await runOf('hash-diff');
      const line = (name: string, m: Measured) =>
        `  ${name.padEnd(22)} ${m.seconds.toFixed(2).padStart(8)} s  ${formatBytes(m.read).padStart(10)} read  ${m.cpu.toFixed(2).padStart(6)} CPU-s`;
      console.log(
        `\nRCT incremental vs hash-diff, hyperv ► file, on the SIMULATED Hyper-V host (@replikit/hyperv-sim, not Hyper-V):` +
          `\n${formatBytes(size)} disk, ${Math.round(allocated * 100)} % written, then 4 KiB into ${writes.length} of ${blocks} blocks (1 %)`,
      );
      console.log(line(`rct (${tracked.modes})`, tracked));
      console.log(line(`hash-diff (${hashed.modes})`, hashed));
      console.log(
        `  ratio: rct is ${(hashed.seconds / tracked.seconds).toFixed(1)}x faster, reads ${(hashed.read / Math.max(1, tracked.read)).toFixed(0)}x fewer bytes` +
          ` and uses ${(hashed.cpu / Math.max(0.001, tracked.cpu)).toFixed(1)}x less CPU (changed blocks: ${formatBytes(writes.length * BLOCK)})`,
      );
      console.log(
        `  full read: replikit's first run ${full.seconds.toFixed(2)} s (${formatBytes(full.read)} read)` +
          (qemu === undefined
            ? '; qemu-img not found, no peer'
            : `, qemu-img convert of the same VHDX ${qemu.toFixed(2)} s (${(qemu / full.seconds).toFixed(2)}x of replikit's time)`),
      );
      console.log(
        '  bytes read are counted by the simulated host on the source VHDX files (headers and BATs included); CPU-s is this process only.',
      );
    } finally {
      await engines.rct.close();
      await engines['hash-diff'].close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
