import type { Hypervisor, RunRecord } from '@replikit/core';
import type { CliContext } from '../context.js';
import { diskDigest } from './disk-digest.js';

/**
 * Compares each replica disk of a run with its source snapshot disk (sha256 of the whole disk),
 * printing a line per disk; false when the run did not complete or a disk differs.
 */
export async function verifyRun(
  context: CliContext,
  record: RunRecord,
  source: Hypervisor,
  target: Hypervisor,
): Promise<boolean> {
  if (record.outcome !== 'completed') {
    context.stdout.write(`   the run ended ${record.outcome}: FAILED (${record.error?.message ?? 'no error'})\n`);
    return false;
  }
  let ok = true;
  for (const [i, disk] of record.snapshot!.disks.entries()) {
    const [want, got] = await Promise.all([diskDigest(source, disk), diskDigest(target, record.replica!.disks[i]!)]);
    ok &&= want === got;
    context.stdout.write(
      `   disk ${disk.id}: snapshot sha256 ${want.slice(0, 16)}…, replica ${got.slice(0, 16)}… ${want === got ? 'equal' : 'DIFFERENT'}\n`,
    );
  }
  return ok;
}
