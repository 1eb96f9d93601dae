// The one-shot run as a user runs it (issue 18, point 1): `node packages/cli/dist/bin.js run job.json`
// as its own process per try, wall clock and CPU-seconds, beside `rsync --inplace --no-whole-file
// --ignore-times` in the same run, and beside the same command run in this process (the CLI's
// `main`, modules already loaded: the in-process figure). The scenario is the dedup benchmark's: a
// raw image (2 GiB by default, 60 % allocated), change tracking on, the replication cache on;
// before each try 1 % of the 64 KiB blocks get a 4 KiB write (the same bytes into rsync's source
// copy). Each process try's time is broken down from its run record: process start to the first
// engine event (`created`), then each stage. CPU-seconds of each child come from this process's
// cutime/cstime (/proc/self/stat), of an in-process run from process.cpuUsage(). Medians are given
// with their spread (min–max): on a loaded machine compare the CPU figures. `replikit run` ends
// before the file system has freed a merged snapshot's old data (a detached rm does it): the next
// measurement starts only once that rm has ended, and its time after the command is printed.
// Flags: --size=2GiB --allocated=0.6 --changed=0.01 --tries=5
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { RunRecord } from '@replikit/core';
import { formatBytes, parseSize } from '@replikit/core';
import { createFileVM, openGuestDisk } from '@replikit/driver-file';
import { main } from '../packages/cli/src/main.js';
import { fillImage } from './dedup.bench.js';

const BLOCK = 64 * 1024;
const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'packages', 'cli', 'dist', 'bin.js');

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

/** CPU-seconds (user + system) of the children this process has waited for. */
function childCpu(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  // After "pid (comm) ": state is field 3, cutime 16 and cstime 17 (1-based) → indexes 13, 14.
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

/** 4 KiB writes into a share of the blocks: through the guest disk (tracked) and into `copy` alike. */
async function writeBoth(root: string, copy: string, size: number, share: number, round: number): Promise<number> {
  const page = Buffer.allocUnsafe(4096);
  const disk = await openGuestDisk(root, 'bench', 'disk');
  const handle = await open(copy, 'r+');
  let changed = 0;
  try {
    for (let block = 0; block < Math.floor(size / BLOCK); block++) {
      if ((block * 2654435761) % 1000 >= share * 1000) continue;
      const offset = block * BLOCK + (((block + round) * 7) % 16) * 4096;
      randomFillSync(page);
      await disk.write(offset, page);
      await handle.write(page, 0, page.length, offset);
      changed++;
    }
  } finally {
    await disk.close();
    await handle.close();
  }
  return changed;
}

/** Runs `command args`, returning wall seconds, child CPU-seconds and its stdout. */
function timed(command: string, args: string[]): { wall: number; cpu: number; startedAt: number; stdout: string } {
  const cpu = childCpu();
  const startedAt = Date.now();
  const start = process.hrtime.bigint();
  const result = spawnSync(command, args, { encoding: 'utf8' });
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  if (result.status !== 0) throw new Error(`${command} failed (${result.status}): ${result.stderr}`);
  return { wall, cpu: childCpu() - cpu, startedAt, stdout: result.stdout };
}

function newestRun(stateDir: string): RunRecord {
  const dir = join(stateDir, 'runs');
  const records = readdirSync(dir)
    .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
    .map((n) => JSON.parse(readFileSync(join(dir, n), 'utf8')) as RunRecord);
  return records.sort((a, b) => a.startedAt.localeCompare(b.startedAt)).at(-1)!;
}

/** "start→created 0.31, validate 0.02, …, exit 0.01" from a run record and the process's start and end. */
function breakdown(record: RunRecord, startedAt: number, endedAt: number): string {
  const parts: string[] = [];
  let previous = startedAt;
  let label = 'start→created';
  for (const entry of record.history) {
    const at = Date.parse(entry.at);
    parts.push(`${label} ${((at - previous) / 1000).toFixed(3)}`);
    previous = at;
    label = entry.state;
  }
  parts.push(`exit ${((endedAt - previous) / 1000).toFixed(3)}`);
  return parts.join(', ');
}

/** Waits until `folder` holds no `.deleting-` entry (a detached removal has ended); resolves with the seconds waited. */
async function removalsSettled(folder: string): Promise<number> {
  const start = performance.now();
  while (readdirSync(folder).some((name) => name.startsWith('.deleting-'))) await sleep(10);
  return (performance.now() - start) / 1000;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** "1.23 s (1.10–1.50)": the median and the spread of `values`. */
function spread(values: number[], digits = 2): string {
  const sorted = [...values].sort((a, b) => a - b);
  return `${median(values).toFixed(digits)} (${sorted[0]!.toFixed(digits)}–${sorted.at(-1)!.toFixed(digits)})`;
}

/** Runs the CLI's `main` in this process (stdout and stderr dropped): wall and CPU-seconds. */
async function inProcess(argv: string[]): Promise<{ wall: number; cpu: number }> {
  // The progress view and the summary go nowhere (the CLI's own tests pass streams the same way).
  const sink = new Writable({ write: (_chunk, _encoding, done) => done() }) as unknown as NodeJS.WriteStream;
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  const context = {
    stdout: sink,
    stderr: sink,
    cwd: process.cwd(),
    env: process.env,
    signal: new AbortController().signal,
  };
  const code = await main(argv, context);
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpu);
  if (code !== 0) throw new Error(`replikit ${argv.join(' ')} (in process) exited with ${code}`);
  return { wall, cpu: (used.user + used.system) / 1e6 };
}

export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'size', '2GiB'), '--size');
  const allocated = Number(flag(flags, 'allocated', '0.6'));
  const share = Number(flag(flags, 'changed', '0.01'));
  const tries = Number(flag(flags, 'tries', '5'));
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-oneshot-'));
  try {
    const vms = join(dir, 'vms');
    const stateDir = join(dir, 'state');
    await createFileVM(vms, { name: 'bench', disks: [{ id: 'disk', size }], changeTracking: true });
    const image = join(vms, 'bench', 'disk.raw');
    await fillImage(image, size, allocated);
    const jobFile = join(dir, 'job.json');
    writeFileSync(
      jobFile,
      JSON.stringify({
        name: 'bench',
        source: { driver: 'file', root: vms, vm: 'bench' },
        target: { driver: 'file', root: join(dir, 'replicas') },
        method: 'qhybrid',
        options: { replicationCache: true },
      }),
    );
    const replikit = ['--state-dir', stateDir, 'run', jobFile];
    console.log(`image ${formatBytes(size)}, ${Math.round(allocated * 100)} % allocated; first (full) replication…`);
    timed(process.execPath, [BIN, ...replikit]);
    await mkdir(join(dir, 'rsync'));
    const rsyncSource = join(dir, 'rsync', 'source.raw');
    const rsyncTarget = join(dir, 'rsync', 'target.raw');
    execFileSync('cp', ['--sparse=always', image, rsyncTarget]);
    execFileSync('cp', ['--sparse=always', image, rsyncSource]);
    const version = timed(process.execPath, [BIN, '--version']);
    console.log(`\`replikit --version\` as a process: ${version.wall.toFixed(3)} s (node start + CLI load)`);

    // A first in-process run loads the modules, as a long-lived program would have them loaded.
    await writeBoth(vms, rsyncSource, size, share, 0);
    await inProcess(replikit);

    const rsyncWall: number[] = [];
    const rsyncCpu: number[] = [];
    const processWall: number[] = [];
    const processCpu: number[] = [];
    const inWall: number[] = [];
    const inCpu: number[] = [];
    for (let round = 1; round <= tries; round++) {
      const changed = await writeBoth(vms, rsyncSource, size, share, round);
      execFileSync('sync');
      const rsync = timed('rsync', ['--inplace', '--no-whole-file', '--ignore-times', rsyncSource, rsyncTarget]);
      const one = timed(process.execPath, [BIN, ...replikit]);
      const record = newestRun(stateDir);
      if (record.state !== 'completed') throw new Error(`the run ended ${record.state}`);
      // The command leaves the merged snapshot's old data to a detached rm; nothing else is timed
      // until that removal has ended, so that it slows no one's measurement.
      const removal = await removalsSettled(join(vms, 'bench', 'snapshots'));
      // The in-process run gets a change set of its own (same size; rsync's copy gets it too).
      await writeBoth(vms, rsyncSource, size, share, round + tries);
      execFileSync('sync');
      const here = await inProcess(replikit);
      rsyncWall.push(rsync.wall);
      rsyncCpu.push(rsync.cpu);
      processWall.push(one.wall);
      processCpu.push(one.cpu);
      inWall.push(here.wall);
      inCpu.push(here.cpu);
      console.log(
        `try ${round}: ${changed} blocks written; rsync ${rsync.wall.toFixed(2)} s (${rsync.cpu.toFixed(2)} CPU-s), ` +
          `replikit run ${one.wall.toFixed(3)} s (${one.cpu.toFixed(2)} CPU-s), ratio ${(rsync.wall / one.wall).toFixed(1)}x; ` +
          `${record.stats.blocksChanged} blocks sent; in process ${here.wall.toFixed(3)} s (${here.cpu.toFixed(2)} CPU-s)`,
      );
      console.log(
        `  replikit stages (s): ${breakdown(record, one.startedAt, one.startedAt + one.wall * 1000)}; ` +
          `its detached removal ended ${removal.toFixed(2)} s after it`,
      );
    }
    console.log(
      `one-shot, medians (min–max) of ${tries}: rsync ${spread(rsyncWall)} s, ${spread(rsyncCpu)} CPU-s; ` +
        `replikit run (a process each) ${spread(processWall, 3)} s, ${spread(processCpu)} CPU-s; ` +
        `in process ${spread(inWall, 3)} s, ${spread(inCpu)} CPU-s`,
    );
    console.log(
      `speed ratio rsync/replikit, a process each: wall ${(median(rsyncWall) / median(processWall)).toFixed(1)}x, ` +
        `CPU ${(median(rsyncCpu) / median(processCpu)).toFixed(1)}x (goal ≥ 10x); in process: wall ` +
        `${(median(rsyncWall) / median(inWall)).toFixed(1)}x, CPU ${(median(rsyncCpu) / median(inCpu)).toFixed(1)}x`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
