// Single-pass backup's cost (issue 18 point 2): on the dedup benchmark's image (2 GiB by default,
// 60 % allocated, 1 % of 64 KiB blocks then get a 4 KiB guest write), the same job is run without
// and with `options.singlePass` (each with its own replica and state), first run and incremental
// run, and the ratios shown; then a version is restored and timed against `cat` of the restored
// image (read from the page cache) and against a durable sparse copy of it (`cp --sparse` then
// `sync`, what any restore that ends with its data on disk pays), and a store holding 1,000
// versions of one VM is listed.
// Flags: --size=2GiB --allocated=0.6 --changed=0.01 --encrypt (a key file for the block store)
// --unique (every allocated stripe random: no chunk repeats, so restore cannot reuse a checked chunk)
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, formatBytes, parseSize, ReplicationEngine } from '@replikit/core';
import { createHashingPool, FileBlockStore, FileCacheProvider } from '@replikit/dedup';
import { createFileVM, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { fillImage, guestWrites } from './dedup.bench.js';

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'size', '2GiB'), '--size');
  const allocated = Number(flag(flags, 'allocated', '0.6'));
  const share = Number(flag(flags, 'changed', '0.01'));
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-sp-'));
  try {
    // Each job has its own copy of the VM: the file driver's snapshot copies what changed since
    // the VM's newest snapshot, so with one VM shared the job run first would pay the whole
    // image's copy and the other almost nothing.
    const vmsOf = (name: string) => join(dir, name, 'vms');
    for (const name of ['plain', 'sp']) {
      await createFileVM(vmsOf(name), { name: 'bench', disks: [{ id: 'disk', size }], changeTracking: true });
      await fillImage(join(vmsOf(name), 'bench', 'disk.raw'), size, allocated, flags.includes('--unique'));
    }
    let keyFile: string | undefined;
    if (flags.includes('--encrypt')) {
      keyFile = join(dir, 'store.key');
      await writeFile(keyFile, randomBytes(32), { mode: 0o600 });
    }
    const store = new FileBlockStore(join(dir, 'sp', 'store'), keyFile ? { keyFile } : {});
    const engineFor = (name: string, backup?: FileBlockStore) =>
      new ReplicationEngine({
        transport: localTransport(),
        stateStore: new FileStateStore(join(dir, name, 'state')),
        drivers: new DriverRegistry().register(fileDriver),
        digest: 'xxh128',
        hasher: (algorithm) => createHashingPool({ algorithm }),
        cache: new FileCacheProvider(join(dir, name, 'cache')),
        ...(backup ? { backup } : {}),
        keepHashers: true,
      });
    const plain = engineFor('plain');
    const single = engineFor('sp', store);
    const job = (name: string, singlePass: boolean) => ({
      name: `bench-${name}`,
      source: { driver: 'file', root: vmsOf(name), vm: 'bench' },
      target: { driver: 'file', root: join(dir, name, 'replicas') },
      method: 'qhybrid',
      options: { replicationCache: true, singlePass },
    });
    const timed = async (engine: ReplicationEngine, name: string, singlePass: boolean) => {
      execFileSync('sync');
      const start = process.hrtime.bigint();
      await engine.run(job(name, singlePass));
      return seconds(start);
    };
    console.log(
      `image ${formatBytes(size)}, ${Math.round(allocated * 100)} % allocated${flags.includes('--unique') ? ', every stripe random' : ''}${keyFile ? ', encrypted store' : ''}`,
    );
    const firstPlain = await timed(plain, 'plain', false);
    const firstSingle = await timed(single, 'sp', true);
    await guestWrites(vmsOf('plain'), size, share);
    await guestWrites(vmsOf('sp'), size, share);
    const incPlain = await timed(plain, 'plain', false);
    const incSingle = await timed(single, 'sp', true);
    console.log(
      `first run: ${firstPlain.toFixed(2)} s without single-pass, ${firstSingle.toFixed(2)} s with: ${(firstSingle / firstPlain).toFixed(2)}x (goal ≤ 1.3x)`,
    );
    console.log(
      `incremental run: ${incPlain.toFixed(2)} s without, ${incSingle.toFixed(2)} s with: ${(incSingle / incPlain).toFixed(2)}x (goal ≤ 1.2x)`,
    );

    const versions = await store.list('bench');
    const latest = versions.at(-1)!;
    const out = join(dir, 'restored.raw');
    execFileSync('sync');
    let start = process.hrtime.bigint();
    await store.restore('bench', latest.id, 'disk', out);
    const restoreSeconds = seconds(start);
    start = process.hrtime.bigint();
    execFileSync('sh', ['-c', 'cat "$1" > /dev/null', 'cat', out]);
    const catSeconds = seconds(start);
    // What any restore that ends durable pays: a sparse copy of the same image, then its fsync.
    const copy = join(dir, 'copied.raw');
    start = process.hrtime.bigint();
    execFileSync('sh', ['-c', 'cp --sparse=always "$1" "$2" && sync "$2"', 'cp', out, copy]);
    const copySeconds = seconds(start);
    console.log(
      `restore: ${formatBytes(size / restoreSeconds)}/s, cat of the restored image ${formatBytes(size / catSeconds)}/s: ${(catSeconds / restoreSeconds).toFixed(2)} (goal ≥ 0.5); ` +
        `cp --sparse + sync of it ${formatBytes(size / copySeconds)}/s: ${(copySeconds / restoreSeconds).toFixed(2)}`,
    );
    await rm(out, { force: true });
    await rm(copy, { force: true });

    // 1,000 versions of a long-lived job (one small disk each; all zero, so no chunks).
    for (let i = 0; i < 1000; i++) {
      const runId = `long-${String(i).padStart(4, '0')}`;
      const session = await store.begin({ vm: 'long', runId, blockSize: 65536, disks: [{ id: 'd', size: 1 << 20 }] });
      await session.close();
      await store.commitPending('long', runId);
    }
    const listing = new FileBlockStore(store.dir, keyFile ? { keyFile } : {});
    start = process.hrtime.bigint();
    const listed = await listing.list('long');
    console.log(`list of ${listed.length} versions: ${(seconds(start) * 1000).toFixed(0)} ms (goal < 1 s)`);
    await plain.close();
    await single.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
