// The Xen driver's NBD client, per issue 17: read throughput of our client against libnbd's
// `nbdcopy` reading the same export from the simulated xapi-nbd (forced STARTTLS, EXPORT_NAME,
// no multi-conn), as a ratio (goal ≥ 0.8×), and CPU seconds per GiB of each reader. The simulator
// runs in a forked child so that the CPU of this process is the client's alone; nbdcopy's CPU is
// read from /proc/self/stat (children's time, counted once it is reaped). Each reader gets an
// untimed warm-up round, then `--repeat` timed rounds, interleaved; medians are printed.
// Then the CBT method's incremental against the same run with hash-diff (./xen-cbt.ts).
// Flags: --size=256MiB --repeat=3 --connections=1,2,4 --cbt-size=1GiB (--cbt-size=0 skips the CBT part)
import { fork, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatBytes, parseSize } from '@replikit/core';
import { cbtVersusHashDiff } from './xen-cbt.js';

const here = fileURLToPath(import.meta.url);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** nbdcopy's request size: the size our client's requests have by default. */
const REQUEST = 2 * MiB;
/** What the engine reads at once when it scans a disk, and how many such reads it keeps in flight. */
const SCAN = 4 * MiB;
const READ_AHEAD = 4;

interface Served {
  address: string;
  port: number;
  exportname: string;
  cert: string;
  certDir: string;
  size: number;
}

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

/** Children's CPU seconds of this process so far (reaped children only). */
function childrenCpu(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / 100; // cutime + cstime, USER_HZ 100
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function ours(served: Served, connections: number): Promise<{ seconds: number; cpu: number }> {
  const { NbdDiskReader, NbdExport } = await import('@replikit/driver-xen');
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  // The driver's path: an NbdDiskReader over an export opened as the driver opens it (default
  // request size), read as the engine scans a disk (SCAN segments, READ_AHEAD of them in flight,
  // buffers reused).
  const nbd = await NbdExport.open(
    { host: served.address, port: served.port, exportName: served.exportname, cert: served.cert },
    { connections },
  );
  const noTail = () => {
    throw new Error('the bench export is a whole number of sectors');
  };
  const reader = new NbdDiskReader(nbd, noTail, async () => undefined, served.size, 'bench export');
  const buffers = Array.from({ length: READ_AHEAD }, () => new Uint8Array(SCAN));
  let next = 0;
  const worker = async (buffer: Uint8Array) => {
    for (;;) {
      const offset = next;
      next += SCAN;
      if (offset >= served.size) return;
      const length = Math.min(SCAN, served.size - offset);
      await reader.readInto(offset, buffer.subarray(0, length));
    }
  };
  await Promise.all(buffers.map(worker));
  await reader.close();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const used = process.cpuUsage(cpu0);
  return { seconds, cpu: (used.user + used.system) / 1e6 };
}

async function nbdcopy(served: Served): Promise<{ seconds: number; cpu: number }> {
  const uri = `nbds://${served.address}:${served.port}/${encodeURIComponent(served.exportname)}?tls-certificates=${served.certDir}`;
  const cpu0 = childrenCpu();
  const t0 = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    const child = spawn('nbdcopy', ['--request-size', String(REQUEST), uri, 'null:'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`nbdcopy exited ${code}: ${err}`))));
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, cpu: childrenCpu() - cpu0 };
}

/** The forked child: a simulated pool with one VDI of random bytes, served over NBD. */
async function serve(size: number): Promise<void> {
  const { startXapiSim } = await import('@replikit/xapi-sim');
  const { randomFillSync } = await import('node:crypto');
  const dir = await mkdtemp(join(tmpdir(), 'rk-xen-bench-'));
  const sim = await startXapiSim({ dir, nbd: true });
  const session = (await sim.call('session.login_with_password', 'root', 'password')) as string;
  const call = (m: string, ...a: unknown[]) => sim.call(m, session, ...a);
  const vm = (await call('VM.create', { name_label: 'bench' })) as string;
  const vdi = (await call('VDI.create', { SR: sim.refs.sr, virtual_size: size, type: 'user' })) as string;
  await call('VBD.create', { VM: vm, VDI: vdi, userdevice: '0', mode: 'RW', type: 'Disk' });
  await call('VM.start', vm, false, false);
  const chunk = new Uint8Array(4 * MiB);
  for (let at = 0; at < size; at += chunk.length) {
    randomFillSync(chunk);
    await sim.guestWrite(vm, '0', at, chunk.subarray(0, Math.min(chunk.length, size - at)));
  }
  const info = ((await call('VDI.get_nbd_info', vdi)) as Array<Record<string, unknown>>)[0]!;
  process.send!({ ...info, certDir: sim.tls!.dir, size } as unknown as Served);
  process.once('disconnect', async () => {
    await sim.close();
    await rm(dir, { recursive: true, force: true });
    process.exit(0);
  });
}

/** Runs the benchmark (see the header). */
export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'size', '256MiB'));
  const repeat = Number(flag(flags, 'repeat', '3'));
  const counts = flag(flags, 'connections', '1,2,4').split(',').map(Number);
  const child = fork(here, ['--serve', String(size)], { execArgv: process.execArgv });
  const served = await new Promise<Served>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Served));
    child.once('exit', (code) => reject(new Error(`the simulator child exited ${code}`)));
  });
  try {
    const readers: Array<[string, () => Promise<{ seconds: number; cpu: number }>]> = [
      ['nbdcopy', () => nbdcopy(served)],
      ...counts.map(
        (n) =>
          [`replikit NBD client, ${n} conn`, () => ours(served, n)] as [
            string,
            () => Promise<{ seconds: number; cpu: number }>,
          ],
      ),
    ];
    const results = new Map<string, Array<{ seconds: number; cpu: number }>>();
    for (const [, read] of readers) await read(); // warm-up
    for (let r = 0; r < repeat; r++) {
      for (const [name, read] of readers) {
        const list = results.get(name) ?? [];
        list.push(await read());
        results.set(name, list);
      }
    }
    const gib = size / GiB;
    const base = median(results.get('nbdcopy')!.map((x) => x.seconds));
    console.log(
      `export: ${formatBytes(size)} of random bytes from the simulated xapi-nbd (STARTTLS), ${repeat} rounds, medians`,
    );
    console.log('reader                           MiB/s   CPU-s/GiB   throughput vs nbdcopy');
    for (const [name] of readers) {
      const list = results.get(name)!;
      const seconds = median(list.map((x) => x.seconds));
      const cpu = median(list.map((x) => x.cpu));
      const ratio = base / seconds;
      console.log(
        `${name.padEnd(32)} ${(size / MiB / seconds).toFixed(0).padStart(5)}   ${(cpu / gib).toFixed(2).padStart(9)}   ${ratio.toFixed(2)}×`,
      );
    }
  } finally {
    child.disconnect();
    await new Promise((resolve) => child.once('exit', resolve));
  }
  const cbtSize = parseSize(flag(flags, 'cbt-size', '1GiB'));
  if (cbtSize > 0) await cbtVersusHashDiff(cbtSize);
}

if (process.argv[2] === '--serve') void serve(Number(process.argv[3]));
