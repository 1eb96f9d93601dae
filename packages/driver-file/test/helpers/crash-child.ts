/**
 * Child process of the crash tests. Usage:
 *
 *   node --conditions=@replikit/source --import tsx crash-child.ts <request.json>
 *
 * The request names a driver root, a replica, an operation (`commit`, `revert`, `snapshot` of a VM,
 * `delete` of a snapshot, or `guest-write`: tracked writes to disk d0 of a VM, killed before close) and optionally a
 * fault point and occurrence at which the process kills itself with SIGKILL (no `finally`, no
 * exit handlers: exactly what a crash leaves). It prints `started` before the operation and `done`
 * after it.
 */
import { readFileSync } from 'node:fs';
import type { Replica, RestorePoint, Snapshot } from '@replikit/core';
import { createFileDriver, type FaultPoint, openGuestDisk } from '../../src/index.js';

interface CrashRequest {
  root: string;
  replica: Replica;
  op: 'commit' | 'revert' | 'snapshot' | 'delete' | 'guest-write';
  /** `snapshot`: the VM. */
  vm?: string;
  /** `delete`: the snapshot. */
  snapshot?: Snapshot;
  keepMetadata?: boolean;
  label?: string;
  point?: RestorePoint;
  killAt?: FaultPoint;
  occurrence?: number;
}

const request = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as CrashRequest;
let seen = 0;
const hv = createFileDriver({
  root: request.root,
  faultHook: (point) => {
    if (point === request.killAt && ++seen >= (request.occurrence ?? 1)) process.kill(process.pid, 'SIGKILL');
  },
});
process.stdout.write('started\n');
if (request.op === 'commit') await hv.createRestorePoint(request.replica, request.label ?? 'crash');
else if (request.op === 'revert') await hv.revertTo(request.replica, request.point!);
else if (request.op === 'snapshot') await hv.snapshot(request.vm!, request.label ?? 'crash');
else if (request.op === 'guest-write') {
  // Tracked writes, then a crash before close: the bitmap's session stays open.
  const disk = await openGuestDisk(request.root, request.vm!, 'd0');
  for (let i = 0; i < 5; i++) await disk.write(i * 300_000 + 11, new Uint8Array(9000).fill(i + 1));
  process.kill(process.pid, 'SIGKILL');
} else await hv.deleteSnapshot(request.snapshot!, { keepMetadata: request.keepMetadata === true });
process.stdout.write('done\n');
